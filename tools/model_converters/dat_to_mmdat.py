"""Convert a checkpoint of the authors' DAT code into an mmpretrain ImageClassifier checkpoint.

    python tools/model_converters/dat_to_mmdat.py dat_tiny_in1k_224.pth dat_t_mmdat.pth

The result has ``backbone.*`` (mmdat's ``DAT``) and ``head.fc.*`` keys: test it with
``configs/classification/dat_t_in1k.py``, or load its backbone into a detector or segmentor
with ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.

The architecture is read off the checkpoint and the converted keys are checked against a
``DAT`` built with it: unknown source keys and missing target keys are reported by name and
the conversion fails; derived buffers (window index tables and shift masks, which mmdat
rebuilds for each input size) are listed as skipped.
"""
import argparse
import re
import sys
from collections import OrderedDict

import torch

# authors' name (regex) -> mmdat's name; \1 = stage, \2 = block/index
_RULES = [
    (r'^patch_proj\.0\.(weight|bias)$', r'backbone.patch_embed.projection.\1'),
    (r'^patch_proj\.1\.norm\.(weight|bias)$', r'backbone.patch_embed.norm.\1'),
    (r'^down_projs\.(\d+)\.0\.weight$', lambda m: f'backbone.stages.{int(m[1]) + 1}'
     '.downsample.projection.weight'),
    (r'^down_projs\.(\d+)\.1\.norm\.(weight|bias)$', lambda m: f'backbone.stages.'
     f'{int(m[1]) + 1}.downsample.norm.{m[2]}'),
    (r'^stages\.(\d+)\.layer_norms\.(\d+)\.norm\.(weight|bias)$', lambda m: f'backbone.stages.'
     f'{m[1]}.blocks.{int(m[2]) // 2}.norm{int(m[2]) % 2 + 1}.{m[3]}'),
    (r'^stages\.(\d+)\.mlps\.(\d+)\.chunk\.linear1\.(weight|bias)$',
     r'backbone.stages.\1.blocks.\2.ffn.layers.0.0.\3'),
    (r'^stages\.(\d+)\.mlps\.(\d+)\.chunk\.linear2\.(weight|bias)$',
     r'backbone.stages.\1.blocks.\2.ffn.layers.1.\3'),
    # window attention (local and shift-window)
    (r'^stages\.(\d+)\.attns\.(\d+)\.proj_qkv\.(weight|bias)$',
     r'backbone.stages.\1.blocks.\2.attn.w_msa.qkv.\3'),
    (r'^stages\.(\d+)\.attns\.(\d+)\.relative_position_bias_table$',
     r'backbone.stages.\1.blocks.\2.attn.w_msa.relative_position_bias_table'),
    # deformable attention
    (r'^stages\.(\d+)\.attns\.(\d+)\.conv_offset\.(0|3)\.(weight|bias)$',
     r'backbone.stages.\1.blocks.\2.attn.conv_offset.\3.\4'),
    (r'^stages\.(\d+)\.attns\.(\d+)\.conv_offset\.1\.norm\.(weight|bias)$',
     r'backbone.stages.\1.blocks.\2.attn.conv_offset.1.\3'),
    (r'^stages\.(\d+)\.attns\.(\d+)\.(proj_q|proj_k|proj_v|rpe_table)(\..*)?$',
     r'backbone.stages.\1.blocks.\2.attn.\3\4'),
    (r'^cls_norm\.norm\.(weight|bias)$', r'backbone.norm3.\1'),
    (r'^cls_head\.(weight|bias)$', r'head.fc.\1'),
]
# buffers that mmdat derives from the input size
_DERIVED = re.compile(r'\.(relative_position_index|attn_mask|rpe_index)$')


def _rename(key, is_window_attn):
    if re.match(r'^stages\.\d+\.attns\.\d+\.proj_out\.(weight|bias)$', key):
        # window attention: Linear -> w_msa.proj; deformable: 1x1 conv -> proj_out
        m = re.match(r'^stages\.(\d+)\.attns\.(\d+)\.proj_out\.(\w+)$', key)
        tail = 'w_msa.proj' if is_window_attn else 'proj_out'
        return f'backbone.stages.{m[1]}.blocks.{m[2]}.attn.{tail}.{m[3]}'
    for pattern, repl in _RULES:
        m = re.match(pattern, key)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    return None


def infer_arch(state_dict):
    """Read DAT's constructor arguments off an authors' state dict."""
    dims = [state_dict['patch_proj.0.weight'].shape[0]]
    for i in range(3):
        dims.append(state_dict[f'down_projs.{i}.0.weight'].shape[0])
    depths, heads, groups, stage_types = [], [], [], []
    window, img_size = 7, 224
    for i in range(4):
        n = len({k.split('.')[3] for k in state_dict if k.startswith(f'stages.{i}.mlps.')})
        depths.append(n)
        deform = f'stages.{i}.attns.1.conv_offset.0.weight' in state_dict
        stage_types.append('deformable' if deform else 'swin')
        table = state_dict[f'stages.{i}.attns.0.relative_position_bias_table']
        heads.append(table.shape[1])
        window = (int(round(table.shape[0]**0.5)) + 1) // 2
        # offset groups: channels / channels per group (1 for stages without deformable blocks)
        groups.append(dims[i] // state_dict[f'stages.{i}.attns.1.conv_offset.0.weight'].shape[0]
                      if deform else 1)
        if deform and f'stages.{i}.attns.1.rpe_table' in state_dict:
            rpe = state_dict[f'stages.{i}.attns.1.rpe_table']
            if rpe.dim() == 3:
                img_size = (rpe.shape[1] + 1) // 2 * 4 * 2**i
    arch = dict(embed_dims=dims, depths=depths, num_heads=heads, groups=groups)
    return dict(arch=arch, window_size=window, stage_types=tuple(stage_types), img_size=img_size)


def convert(src_state_dict):
    """Return ``(converted, skipped)``; raise ``KeyError`` naming unknown source keys."""
    converted, skipped, unknown = OrderedDict(), [], []
    for key, value in src_state_dict.items():
        if _DERIVED.search(key):
            skipped.append(key)
            continue
        prefix = '.'.join(key.split('.')[:4])
        is_window = f'{prefix}.proj_qkv.weight' in src_state_dict
        new_key = _rename(key, is_window)
        if new_key is None:
            unknown.append(key)
            continue
        if new_key.endswith('w_msa.qkv.weight') or new_key.endswith('w_msa.proj.weight'):
            value = value.reshape(value.shape[0], -1)  # a 1x1 conv stored as (O, I, 1, 1)
        converted[new_key] = value
    if unknown:
        raise KeyError(f'{len(unknown)} keys of the source checkpoint are not part of the '
                       f'authors\' DAT layout: {unknown}')
    return converted, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='checkpoint of the authors\' code ({"model": state_dict})')
    parser.add_argument('dst', help='where to write the mmpretrain checkpoint')
    args = parser.parse_args(argv)

    ckpt = torch.load(args.src, map_location='cpu', weights_only=True)
    state_dict = ckpt.get('model', ckpt.get('state_dict', ckpt))
    converted, skipped = convert(state_dict)
    build_args = infer_arch(state_dict)

    from mmdat.models.backbones import DAT
    model = DAT(**build_args, out_indices=(3, ), drop_path_rate=0.)
    expected = {f'backbone.{k}' for k in model.state_dict()
                if not k.endswith('relative_position_index')}
    num_classes = converted['head.fc.weight'].shape[0] if 'head.fc.weight' in converted else 0
    if num_classes:
        expected |= {'head.fc.weight', 'head.fc.bias'}
    missing = sorted(expected - set(converted))
    extra = sorted(set(converted) - expected - {k for k in converted
                                                if k.endswith('relative_position_index')})
    if missing or extra:
        print(f'error: converted keys do not fit DAT{build_args}:\n  missing: {missing}\n'
              f'  unexpected: {extra}', file=sys.stderr)
        return 1
    for key in skipped:
        print(f'skipped derived buffer: {key}')
    torch.save({'state_dict': converted,
                'meta': dict(dat_build_args=build_args, num_classes=num_classes,
                             converted_from=args.src)}, args.dst)
    print(f'converted {len(converted)} tensors ({build_args}) -> {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
