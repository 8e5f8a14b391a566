"""Convert a checkpoint of the authors' DAT or DAT++ code into an mmdat checkpoint.

    python tools/model_converters/dat_to_mmdat.py SRC DST [--config CONFIG]

Recognised on their own:

* classification checkpoints of DAT (LeapLabTHU/DAT, v1) and DAT++ (``{'model': state_dict}``):
  the result has ``backbone.*`` (mmdat's ``DAT``) and ``head.fc.*`` keys, for mmpretrain's
  ``ImageClassifier`` (``configs/classification/dat_t_in1k.py`` ...), or for a detector's or
  segmentor's ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``;
* whole-model checkpoints of DAT-Detection (mmdet 2.x) and DAT-Segmentation (mmseg 0.x)
  (``{'state_dict': ...}`` with ``backbone.*`` keys): the backbone keys become mmdat's, the
  neck and head keys keep their names, which mmdet 3.x and mmseg 1.x kept for these models
  (FPN, RPN, RetinaNet, the (Cascade) RoI heads, FPNHead, UperHead, FCNHead).

The architecture is read off the checkpoint (table shapes included: a table keeps the size it
has there) and the converted backbone keys are checked against a ``DAT`` built with it;
``--config`` also checks the whole model against the config's, strictly. Unknown source keys
and missing target keys are reported by name and the conversion fails; derived buffers (window
index tables and shift masks, which mmdat rebuilds for each input size) are listed as skipped.
The key strides r of DAT++ are not stored in a checkpoint: the released models all use
(8, 4, 2, 1), mmdat's DAT++ default.
"""
import argparse
import pickle
import re
import sys
from collections import OrderedDict

import torch

# authors' name (regex) -> mmdat's backbone name; \1 = stage, \2 = block/index
_RULES = [
    # stem: DAT's (and DAT++-without-conv-stem's) patch conv, or DAT++'s two 3x3 convs
    (r'^patch_proj\.0\.(weight|bias)$', lambda m, pp: f'patch_embed.projection.'
     f'{"0." if pp else ""}{m[1]}'),
    (r'^patch_proj\.1\.norm\.(weight|bias)$', lambda m, pp: 'patch_embed.projection.1.'
     f'{m[1]}' if pp else f'patch_embed.norm.{m[1]}'),
    (r'^patch_proj\.(3|4)\.(norm\.)?(weight|bias)$', r'patch_embed.projection.\1.\3'),
    (r'^down_projs\.(\d+)\.0\.weight$', lambda m, _: f'stages.{int(m[1]) + 1}'
     '.downsample.projection.weight'),
    (r'^down_projs\.(\d+)\.1\.norm\.(weight|bias)$', lambda m, _: f'stages.'
     f'{int(m[1]) + 1}.downsample.norm.{m[2]}'),
    (r'^stages\.(\d+)\.layer_norms\.(\d+)\.norm\.(weight|bias)$', lambda m, _: f'stages.'
     f'{m[1]}.blocks.{int(m[2]) // 2}.norm{int(m[2]) % 2 + 1}.{m[3]}'),
    # MLP (DAT): Linear-GELU-Linear
    (r'^stages\.(\d+)\.mlps\.(\d+)\.chunk\.linear1\.(weight|bias)$',
     r'stages.\1.blocks.\2.ffn.layers.0.0.\3'),
    (r'^stages\.(\d+)\.mlps\.(\d+)\.chunk\.linear2\.(weight|bias)$',
     r'stages.\1.blocks.\2.ffn.layers.1.\3'),
    # ConvFFN (DAT++): 1x1 convs stored (O, I, 1, 1), squeezed to Linear weights below
    (r'^stages\.(\d+)\.mlps\.(\d+)\.linear(1|2)\.0\.(weight|bias)$',
     r'stages.\1.blocks.\2.ffn.fc\3.\4'),
    (r'^stages\.(\d+)\.mlps\.(\d+)\.dwc\.(weight|bias)$', r'stages.\1.blocks.\2.ffn.dwconv.\3'),
    (r'^stages\.(\d+)\.local_perception_units\.(\d+)\.(weight|bias)$',
     r'stages.\1.blocks.\2.lpu.\3'),
    # window attention (local and shift-window)
    (r'^stages\.(\d+)\.attns\.(\d+)\.proj_qkv\.(weight|bias)$',
     r'stages.\1.blocks.\2.attn.w_msa.qkv.\3'),
    (r'^stages\.(\d+)\.attns\.(\d+)\.relative_position_bias_table$',
     r'stages.\1.blocks.\2.attn.w_msa.relative_position_bias_table'),
    # neighbourhood attention (DAT++)
    (r'^stages\.(\d+)\.attns\.(\d+)\.(qkv|proj)\.(weight|bias)$',
     r'stages.\1.blocks.\2.attn.\3.\4'),
    (r'^stages\.(\d+)\.attns\.(\d+)\.rpb$', r'stages.\1.blocks.\2.attn.rpb'),
    # deformable attention
    (r'^stages\.(\d+)\.attns\.(\d+)\.conv_offset\.(0|3)\.(weight|bias)$',
     r'stages.\1.blocks.\2.attn.conv_offset.\3.\4'),
    (r'^stages\.(\d+)\.attns\.(\d+)\.conv_offset\.1\.norm\.(weight|bias)$',
     r'stages.\1.blocks.\2.attn.conv_offset.1.\3'),
    (r'^stages\.(\d+)\.attns\.(\d+)\.(proj_q|proj_k|proj_v|rpe_table)(\..*)?$',
     r'stages.\1.blocks.\2.attn.\3\4'),
    # output norms: the classifier's, and the dense backbones' per out_index
    (r'^cls_norm\.norm\.(weight|bias)$', r'norm3.\1'),
    (r'^norms\.(\d+)\.norm\.(weight|bias)$', r'norm\1.\2'),
]
_HEAD = [(r'^cls_head\.(weight|bias)$', r'head.fc.\1')]
# top-level modules of mmdet 2.x / mmseg 0.x models whose keys mmdet 3.x / mmseg 1.x kept
DENSE_MODULES = ('neck', 'rpn_head', 'roi_head', 'bbox_head', 'decode_head', 'auxiliary_head')
# buffers that mmdat derives from the input size
_DERIVED = re.compile(r'\.(relative_position_index|attn_mask|rpe_index)$')
# 1x1 convs stored (O, I, 1, 1) that are Linear layers in mmdat
_SQUEEZE = re.compile(r'(w_msa\.(qkv|proj)|ffn\.fc[12])\.weight$')


def is_dat_pp(state_dict):
    """DAT++ checkpoints have neighbourhood attention, ConvFFNs or local perception units."""
    return any(re.match(r'^stages\.\d+\.(attns\.\d+\.rpb|mlps\.\d+\.linear1\.0\.|'
                        r'local_perception_units\.)', k) for k in state_dict)


def _rename(key, is_window_attn, conv_stem_pp):
    if re.match(r'^stages\.\d+\.attns\.\d+\.proj_out\.(weight|bias)$', key):
        # window attention: Linear -> w_msa.proj; deformable: 1x1 conv -> proj_out
        m = re.match(r'^stages\.(\d+)\.attns\.(\d+)\.proj_out\.(\w+)$', key)
        tail = 'w_msa.proj' if is_window_attn else 'proj_out'
        return f'stages.{m[1]}.blocks.{m[2]}.attn.{tail}.{m[3]}'
    for pattern, repl in _RULES:
        m = re.match(pattern, key)
        if m:
            return repl(m, conv_stem_pp) if callable(repl) else m.expand(repl)
    return None


def _layout(kinds):
    """The shortest repeating unit of a stage's attention letters, of at least a pair (the
    papers' unit), e.g. 'NDND' -> 'ND', 'DD' -> 'DD'."""
    for n in range(min(2, len(kinds)), len(kinds) + 1):
        if len(kinds) % n == 0 and kinds == kinds[:n] * (len(kinds) // n):
            return kinds[:n]
    return kinds


def infer_arch(state_dict):
    """Read DAT's constructor arguments off an authors' (backbone) state dict."""
    pp = is_dat_pp(state_dict)
    conv_stem = 'patch_proj.3.weight' in state_dict
    dims = [state_dict['patch_proj.3.weight' if conv_stem else 'patch_proj.0.weight'].shape[0]]
    for i in range(3):
        dims.append(state_dict[f'down_projs.{i}.0.weight'].shape[0])
    depths, heads, groups, stage_types, kernels = [], [], [], [], []
    window, na_kernel, img_size = 7, 7, 224
    for i in range(4):
        depth = len({k.split('.')[3] for k in state_dict if k.startswith(f'stages.{i}.mlps.')})
        depths.append(depth)
        kinds = ''
        for d in range(depth):
            a = f'stages.{i}.attns.{d}.'
            if a + 'conv_offset.0.weight' in state_dict:
                kinds += 'D'
                Cg, _, k, _ = state_dict[a + 'conv_offset.0.weight'].shape
                rpe = state_dict.get(a + 'rpe_table')
                heads_i = None if rpe is None else rpe.shape[0]
                if rpe is not None and rpe.dim() == 3:
                    img_size = (rpe.shape[1] + 1) // 2 * 4 * 2**i
                groups_i, kernel_i = dims[i] // Cg, k
            elif a + 'rpb' in state_dict:
                kinds += 'N'
                heads_i = state_dict[a + 'rpb'].shape[0]
                na_kernel = (state_dict[a + 'rpb'].shape[1] + 1) // 2
            else:
                kinds += 'S' if d % 2 else 'L'
                table = state_dict[a + 'relative_position_bias_table']
                heads_i = table.shape[1]
                window = (int(round(table.shape[0]**0.5)) + 1) // 2
        heads.append(heads_i)
        if 'D' not in kinds:
            groups_i, kernel_i = 1, (9, 7, 5, 3)[i]
        groups.append(groups_i)
        kernels.append(kernel_i)
        layout = _layout(kinds)
        names = {v: k for k, v in {'swin': 'LS', 'deformable': 'LD'}.items()}
        stage_types.append(layout if pp else names.get(layout, layout))
    arch = dict(embed_dims=dims, depths=depths, num_heads=heads, groups=groups)
    args = dict(arch=arch, stage_types=tuple(stage_types), img_size=img_size,
                offset_kernels=tuple(kernels))
    if pp:
        arch.update(family='dat++', ffn='conv' if any('.linear1.0.' in k for k in state_dict)
                    else 'mlp', lpu=any('local_perception_units' in k for k in state_dict))
        args.update(neighborhood_kernel=na_kernel, conv_stem=conv_stem)
    else:
        args.update(window_size=window)
    return args


def convert_backbone(src_state_dict):
    """Authors' backbone keys -> ``(converted, skipped, unknown)`` with mmdat's names."""
    converted, skipped, unknown = OrderedDict(), [], []
    conv_stem_pp = 'patch_proj.3.weight' in src_state_dict
    for key, value in src_state_dict.items():
        if _DERIVED.search(key):
            skipped.append(key)
            continue
        prefix = '.'.join(key.split('.')[:4])
        is_window = f'{prefix}.proj_qkv.weight' in src_state_dict
        new_key = _rename(key, is_window, conv_stem_pp)
        if new_key is None:
            unknown.append(key)
            continue
        if _SQUEEZE.search(new_key):
            value = value.reshape(value.shape[0], -1)  # a 1x1 conv stored as (O, I, 1, 1)
        converted[new_key] = value
    return converted, skipped, unknown


def is_dense(state_dict):
    """A DAT-Detection / DAT-Segmentation whole-model checkpoint (``backbone.*`` keys)."""
    return any(k.startswith('backbone.') for k in state_dict)


def convert(src_state_dict):
    """Return ``(converted, skipped)``: whole-model keys (``backbone.*``, ``head.fc.*`` or the
    dense model's neck/head keys); raise ``KeyError`` naming unknown source keys."""
    src_state_dict = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                                 for k, v in src_state_dict.items())
    dense = is_dense(src_state_dict)
    if dense:
        backbone = OrderedDict((k[len('backbone.'):], v) for k, v in src_state_dict.items()
                               if k.startswith('backbone.'))
        rest = [k for k in src_state_dict if not k.startswith('backbone.')]
        heads = [k for k in rest if k.split('.')[0] in DENSE_MODULES]
        other = [k for k in rest if k.split('.')[0] not in DENSE_MODULES]
    else:
        backbone = OrderedDict((k, v) for k, v in src_state_dict.items()
                               if not re.match(_HEAD[0][0], k))
        heads = [k for k in src_state_dict if re.match(_HEAD[0][0], k)]
        other = []
    converted, skipped, unknown = convert_backbone(backbone)
    converted = OrderedDict((f'backbone.{k}', v) for k, v in converted.items())
    skipped = [f'backbone.{k}' if dense else k for k in skipped]
    for key in heads:
        new_key = key
        for pattern, repl in _HEAD:
            if re.match(pattern, key):
                new_key = re.sub(pattern, repl, key)
        converted[new_key] = src_state_dict[key]
    unknown = [f'backbone.{k}' if dense else k for k in unknown] + other
    if unknown:
        raise KeyError(f'{len(unknown)} keys of the source checkpoint are not part of the '
                       f'authors\' DAT / DAT++ layouts: {unknown}')
    return converted, skipped


def dense_out_indices(state_dict):
    """The stages with an output norm in a dense checkpoint (``backbone.norms.{i}``)."""
    return tuple(sorted({int(k.split('.')[2]) for k in state_dict
                         if re.match(r'^(module\.)?backbone\.norms\.\d+\.', k.replace(
                             'module.', '', 1))}))


def load_source(path, allow_pickle=False):
    """The source's state dict: ``'model'`` (classification), ``'state_dict'`` (mmdet/mmseg)
    or the file itself."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        raise SystemExit(
            f'error: {path} holds Python objects beside its tensors (the authors\' training '
            f'saves its yacs config), which torch refuses to unpickle by default; if you trust '
            f'the file, pass --allow-pickle.\n  ({str(e).splitlines()[0]})') from e
    return ckpt.get('model', ckpt.get('state_dict', ckpt))


def check_against(converted, model, what, prefix=''):
    """Report the keys (under ``prefix``) that ``model`` has and ``converted`` lacks, and the
    reverse; True when there are none."""
    expected = {prefix + k for k in model.state_dict()
                if not k.endswith('relative_position_index')}
    converted = [k for k in converted if k.startswith(prefix)]
    missing = sorted(expected - set(converted))
    extra = sorted(set(converted) - expected)
    if missing or extra:
        print(f'error: converted keys do not fit {what}:\n  missing: {missing}\n'
              f'  unexpected: {extra}', file=sys.stderr)
        return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='checkpoint of the authors\' code ({"model": ...} or '
                        '{"state_dict": ...})')
    parser.add_argument('dst', help='where to write the mmdat checkpoint')
    parser.add_argument('--config', help='an mmdat config to check the whole converted model '
                        'against (strictly)')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='load a trusted source that holds Python objects (torch.load '
                        'with weights_only=False)')
    args = parser.parse_args(argv)

    state_dict = load_source(args.src, args.allow_pickle)
    try:
        converted, skipped = convert(state_dict)
    except KeyError as e:
        print(f'error: {e.args[0]}', file=sys.stderr)
        return 1
    dense = is_dense(state_dict)
    backbone_sd = OrderedDict(
        (k.split('backbone.', 1)[1], v) for k, v in state_dict.items()
        if k.startswith(('backbone.', 'module.backbone.'))) if dense else state_dict
    build_args = infer_arch(backbone_sd)
    out_indices = dense_out_indices(state_dict) if dense else (3, )

    from mmdat.models.backbones import DAT
    model = DAT(**build_args, out_indices=out_indices, drop_path_rate=0.)
    if not check_against(converted, model, f'DAT{build_args}', prefix='backbone.'):
        return 1
    num_classes = converted['head.fc.weight'].shape[0] if 'head.fc.weight' in converted else 0
    if args.config:
        from mmdat.utils.complexity import build_model, load_config
        full = build_model(load_config(args.config))
        if not check_against(converted, full, args.config):
            return 1
        full.load_state_dict(converted, strict=True)  # shapes too
    for key in skipped:
        print(f'skipped derived buffer: {key}')
    torch.save({'state_dict': converted,
                'meta': dict(dat_build_args=build_args, num_classes=num_classes,
                             out_indices=out_indices, converted_from=args.src)}, args.dst)
    print(f'converted {len(converted)} tensors ({build_args}, out_indices {out_indices}) '
          f'-> {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
