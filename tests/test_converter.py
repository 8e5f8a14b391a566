"""tools/model_converters/dat_to_mmdat.py on a checkpoint in the authors' layout.

The source checkpoint is written here from the layout of the numerics page (keys and shapes),
not from mmdat's model, so the test checks the mapping independently.
"""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS

from mmdat.models.backbones import DAT

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _converter():
    path = osp.join(ROOT, 'tools', 'model_converters', 'dat_to_mmdat.py')
    spec = importlib.util.spec_from_file_location('dat_to_mmdat', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def put_deformable(put, prefix, C, M, Cg, kernel, feat):
    """The keys of one deformable attention (DAttentionBaseline), DAT and DAT++ alike."""
    put(prefix + 'conv_offset.0.weight', Cg, 1, kernel, kernel)
    put(prefix + 'conv_offset.0.bias', Cg)
    put(prefix + 'conv_offset.1.norm.weight', Cg)
    put(prefix + 'conv_offset.1.norm.bias', Cg)
    put(prefix + 'conv_offset.3.weight', 2, Cg, 1, 1)
    for proj in ('proj_q', 'proj_k', 'proj_v', 'proj_out'):
        put(prefix + proj + '.weight', C, C, 1, 1)
        put(prefix + proj + '.bias', C)
    put(prefix + 'rpe_table', M, 2 * feat - 1, 2 * feat - 1)


def authors_dat_t_state_dict(num_classes=1000):
    """Random tensors in the authors' DAT-T layout (dat_reference_numerics.md)."""
    g = torch.Generator().manual_seed(0)
    dims, depths, heads, groups = [96, 192, 384, 768], [2, 2, 6, 2], [3, 6, 12, 24], [1, 2, 3, 6]
    kernels, feat = [9, 7, 5, 3], [56, 28, 14, 7]
    sd = {}

    def put(key, *shape):
        sd[key] = torch.randn(*shape, generator=g)

    put('patch_proj.0.weight', 96, 3, 4, 4)
    put('patch_proj.0.bias', 96)
    put('patch_proj.1.norm.weight', 96)
    put('patch_proj.1.norm.bias', 96)
    for i in range(3):
        put(f'down_projs.{i}.0.weight', dims[i + 1], dims[i], 2, 2)
        put(f'down_projs.{i}.1.norm.weight', dims[i + 1])
        put(f'down_projs.{i}.1.norm.bias', dims[i + 1])
    for i in range(4):
        C, M = dims[i], heads[i]
        for n in range(2 * depths[i]):
            put(f'stages.{i}.layer_norms.{n}.norm.weight', C)
            put(f'stages.{i}.layer_norms.{n}.norm.bias', C)
        for d in range(depths[i]):
            p = f'stages.{i}.mlps.{d}.chunk.'
            put(p + 'linear1.weight', 4 * C, C)
            put(p + 'linear1.bias', 4 * C)
            put(p + 'linear2.weight', C, 4 * C)
            put(p + 'linear2.bias', C)
            a = f'stages.{i}.attns.{d}.'
            if d % 2 == 1 and i >= 2:
                put_deformable(put, a, C, M, C // groups[i], kernels[i], feat[i])
            else:  # local / shift-window
                put(a + 'proj_qkv.weight', 3 * C, C)
                put(a + 'proj_qkv.bias', 3 * C)
                put(a + 'proj_out.weight', C, C)
                put(a + 'proj_out.bias', C)
                put(a + 'relative_position_bias_table', 169, M)
                sd[a + 'relative_position_index'] = torch.zeros(49, 49, dtype=torch.long)
                if d % 2 == 1:
                    sd[a + 'attn_mask'] = torch.zeros(64, 49, 49)
    put('cls_norm.norm.weight', 768)
    put('cls_norm.norm.bias', 768)
    put('cls_head.weight', num_classes, 768)
    put('cls_head.bias', num_classes)
    return sd


@pytest.fixture(scope='module')
def authors_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('authors') / 'dat_tiny_in1k_224.pth')
    torch.save({'model': authors_dat_t_state_dict(), 'epoch': 300}, path)
    return path


def test_convert_and_load_strictly(authors_ckpt, tmp_path, capsys):
    dst = str(tmp_path / 'dat_t_mmdat.pth')
    assert _converter().main([authors_ckpt, dst]) == 0
    out = capsys.readouterr().out
    assert 'skipped derived buffer: stages.0.attns.1.attn_mask' in out
    src = torch.load(authors_ckpt, weights_only=True)['model']

    model = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='DAT', arch='tiny'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=768)))
    load_checkpoint(model, dst, strict=True)  # every key present, nothing unexpected
    sd = model.state_dict()
    pairs = {
        'patch_proj.0.weight': 'backbone.patch_embed.projection.weight',
        'down_projs.1.0.weight': 'backbone.stages.2.downsample.projection.weight',
        'stages.2.layer_norms.3.norm.bias': 'backbone.stages.2.blocks.1.norm2.bias',
        'stages.1.attns.1.proj_qkv.weight': 'backbone.stages.1.blocks.1.attn.w_msa.qkv.weight',
        'stages.1.attns.1.proj_out.bias': 'backbone.stages.1.blocks.1.attn.w_msa.proj.bias',
        'stages.3.attns.0.relative_position_bias_table':
        'backbone.stages.3.blocks.0.attn.w_msa.relative_position_bias_table',
        'stages.2.attns.3.conv_offset.1.norm.weight':
        'backbone.stages.2.blocks.3.attn.conv_offset.1.weight',
        'stages.2.attns.5.proj_out.weight': 'backbone.stages.2.blocks.5.attn.proj_out.weight',
        'stages.3.attns.1.rpe_table': 'backbone.stages.3.blocks.1.attn.rpe_table',
        'stages.3.mlps.1.chunk.linear1.weight': 'backbone.stages.3.blocks.1.ffn.layers.0.0.weight',
        'stages.0.mlps.0.chunk.linear2.bias': 'backbone.stages.0.blocks.0.ffn.layers.1.bias',
        'cls_norm.norm.weight': 'backbone.norm3.weight',
        'cls_head.weight': 'head.fc.weight',
    }
    for a, b in pairs.items():
        torch.testing.assert_close(sd[b], src[a], msg=f'{a} -> {b}')
    # the converted classifier runs
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224), mode='tensor').shape == (1, 1000)


def test_unknown_keys_are_reported_by_name():
    sd = authors_dat_t_state_dict()
    sd['stages.2.attns.1.mystery.weight'] = torch.zeros(1)
    with pytest.raises(KeyError, match='stages.2.attns.1.mystery.weight'):
        _converter().convert(sd)


def test_missing_keys_are_reported_by_name(tmp_path, capsys):
    sd = authors_dat_t_state_dict()
    del sd['stages.2.attns.3.proj_k.bias']
    src = str(tmp_path / 'partial.pth')
    torch.save({'model': sd}, src)
    assert _converter().main([src, str(tmp_path / 'out.pth')]) == 1
    err = capsys.readouterr().err
    assert 'backbone.stages.2.blocks.3.attn.proj_k.bias' in err
    assert not osp.exists(str(tmp_path / 'out.pth'))


# ------------------------------------------------------------------------------ DAT++
def authors_dat_pp_state_dict(dims=(64, 128, 256, 512), depths=(2, 4, 18, 2),
                              heads=(2, 4, 8, 16), groups=(1, 2, 4, 8), num_classes=1000,
                              dense_norms=None):
    """Random tensors in the authors' DAT++ layout (dat_pp_reference_numerics.md 5.1; DAT-T++
    by default). ``dense_norms``: write a DAT-Detection/Segmentation backbone instead (5.2):
    no cls_* keys, ``norms.{i}`` for the given stages."""
    g = torch.Generator().manual_seed(0)
    kernels, feat = [9, 7, 5, 3], [56, 28, 14, 7]
    sd = {}

    def put(key, *shape):
        sd[key] = torch.randn(*shape, generator=g)

    C0 = dims[0]
    put('patch_proj.0.weight', C0 // 2, 3, 3, 3)
    put('patch_proj.0.bias', C0 // 2)
    put('patch_proj.1.norm.weight', C0 // 2)
    put('patch_proj.1.norm.bias', C0 // 2)
    put('patch_proj.3.weight', C0, C0 // 2, 3, 3)
    put('patch_proj.3.bias', C0)
    put('patch_proj.4.norm.weight', C0)
    put('patch_proj.4.norm.bias', C0)
    for i in range(4):
        C, M = dims[i], heads[i]
        for n in range(2 * depths[i]):
            put(f'stages.{i}.layer_norms.{n}.norm.weight', C)
            put(f'stages.{i}.layer_norms.{n}.norm.bias', C)
        for d in range(depths[i]):
            p = f'stages.{i}.mlps.{d}.'
            put(p + 'linear1.0.weight', 4 * C, C, 1, 1)
            put(p + 'linear1.0.bias', 4 * C)
            put(p + 'linear2.0.weight', C, 4 * C, 1, 1)
            put(p + 'linear2.0.bias', C)
            put(p + 'dwc.weight', 4 * C, 1, 3, 3)
            put(p + 'dwc.bias', 4 * C)
            a = f'stages.{i}.attns.{d}.'
            if d % 2 == 0 and i < 3:  # neighbourhood attention
                put(a + 'qkv.weight', 3 * C, C)
                put(a + 'qkv.bias', 3 * C)
                put(a + 'rpb', M, 13, 13)
                put(a + 'proj.weight', C, C)
                put(a + 'proj.bias', C)
            else:
                put_deformable(put, a, C, M, C // groups[i], kernels[i], feat[i])
        for d in range(depths[i]):
            put(f'stages.{i}.local_perception_units.{d}.weight', C, 1, 3, 3)
            put(f'stages.{i}.local_perception_units.{d}.bias', C)
        if i < 3:
            put(f'down_projs.{i}.0.weight', dims[i + 1], C, 3, 3)
            put(f'down_projs.{i}.1.norm.weight', dims[i + 1])
            put(f'down_projs.{i}.1.norm.bias', dims[i + 1])
    if dense_norms is None:
        put('cls_norm.norm.weight', dims[3])
        put('cls_norm.norm.bias', dims[3])
        put('cls_head.weight', num_classes, dims[3])
        put('cls_head.bias', num_classes)
    else:
        for i in dense_norms:
            put(f'norms.{i}.norm.weight', dims[i])
            put(f'norms.{i}.norm.bias', dims[i])
    return sd


def test_dat_pp_layout_has_589_tensors():
    assert len(authors_dat_pp_state_dict()) == 589  # the numerics page's count for T/S/B


def test_dat_pp_convert_and_load_strictly(tmp_path, capsys):
    src = str(tmp_path / 'dat_pp_tiny_in1k_224.pth')
    sd = authors_dat_pp_state_dict()
    torch.save({'model': sd}, src)
    dst = str(tmp_path / 'dat_pp_t_mmdat.pth')
    assert _converter().main([src, dst]) == 0
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['dat_build_args']['arch']['family'] == 'dat++'
    assert meta['dat_build_args']['stage_types'] == ('ND', 'ND', 'ND', 'DD')
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='DAT', arch='tiny++'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=512)))
    load_checkpoint(model, dst, strict=True)
    got = model.state_dict()
    pairs = {
        'patch_proj.1.norm.weight': 'backbone.patch_embed.projection.1.weight',
        'patch_proj.3.bias': 'backbone.patch_embed.projection.3.bias',
        'patch_proj.4.norm.bias': 'backbone.patch_embed.projection.4.bias',
        'down_projs.2.0.weight': 'backbone.stages.3.downsample.projection.weight',
        'stages.2.layer_norms.5.norm.weight': 'backbone.stages.2.blocks.2.norm2.weight',
        'stages.1.attns.2.qkv.weight': 'backbone.stages.1.blocks.2.attn.qkv.weight',
        'stages.1.attns.2.rpb': 'backbone.stages.1.blocks.2.attn.rpb',
        'stages.0.attns.0.proj.bias': 'backbone.stages.0.blocks.0.attn.proj.bias',
        'stages.3.attns.0.rpe_table': 'backbone.stages.3.blocks.0.attn.rpe_table',
        'stages.0.attns.1.proj_out.weight': 'backbone.stages.0.blocks.1.attn.proj_out.weight',
        'stages.2.mlps.7.dwc.weight': 'backbone.stages.2.blocks.7.ffn.dwconv.weight',
        'stages.3.local_perception_units.1.bias': 'backbone.stages.3.blocks.1.lpu.bias',
        'cls_head.bias': 'head.fc.bias',
    }
    for a, b in pairs.items():
        torch.testing.assert_close(got[b], sd[a], msg=f'{a} -> {b}')
    for a, b in {'stages.2.mlps.3.linear1.0.weight': 'backbone.stages.2.blocks.3.ffn.fc1.weight',
                 'stages.0.mlps.1.linear2.0.weight': 'backbone.stages.0.blocks.1.ffn.fc2.weight'
                 }.items():  # 1x1 convs -> Linear weights
        torch.testing.assert_close(got[b], sd[a][:, :, 0, 0], msg=f'{a} -> {b}')
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224), mode='tensor').shape == (1, 1000)


def test_dat_pp_checkpoint_tables_keep_their_shape(tmp_path):
    """Numerics page 5.1 on B-384: the tables' shapes (here 384's) are read off the file."""
    sd = authors_dat_pp_state_dict(dims=(32, 64, 128, 256), depths=(2, 2, 2, 2),
                                   heads=(1, 2, 4, 8), groups=(1, 1, 2, 4))
    for i, f in enumerate([96, 48, 24, 12]):
        for d in (1, ) if i < 3 else (0, 1):
            key = f'stages.{i}.attns.{d}.rpe_table'
            sd[key] = torch.randn(sd[key].shape[0], 2 * f - 1, 2 * f - 1)
    args = _converter().infer_arch(sd)
    assert args['img_size'] == 384
    model = DAT(**args)
    converted, _ = _converter().convert(sd)
    model.load_state_dict({k[len('backbone.'):]: v for k, v in converted.items()
                           if k.startswith('backbone.')}, strict=True)
    assert model.stages[0].blocks[1].attn.rpe_table.shape == (1, 191, 191)


def test_dat_detection_layout_converts_with_head_keys(tmp_path, capsys):
    """A DAT-Detection (mmdet 2.x) RetinaNet checkpoint: backbone.* with norms.1-3 only, the
    neck and head keys kept (their names did not change in mmdet 3.x); foreign keys named."""
    sd = {f'backbone.{k}': v for k, v in authors_dat_pp_state_dict(
        dense_norms=(1, 2, 3)).items()}
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 128, 1, 1)
    sd['bbox_head.retina_cls.weight'] = torch.zeros(720, 256, 3, 3)
    src = str(tmp_path / 'rtn_tiny_1x.pth')
    torch.save({'state_dict': sd, 'meta': {'epoch': 12, 'CLASSES': ('person', )}}, src)
    dst = str(tmp_path / 'out.pth')
    assert _converter().main([src, dst]) == 0
    ckpt = torch.load(dst, weights_only=True)
    out = ckpt['state_dict']
    assert ckpt['meta']['out_indices'] == (1, 2, 3)
    assert 'backbone.norm1.weight' in out and 'backbone.norm0.weight' not in out
    assert 'neck.lateral_convs.0.conv.weight' in out and 'bbox_head.retina_cls.weight' in out
    torch.testing.assert_close(out['backbone.stages.1.blocks.0.attn.rpb'],
                               sd['backbone.stages.1.attns.0.rpb'])
    backbone = DAT('tiny++', out_indices=(1, 2, 3))
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in out.items()
                              if k.startswith('backbone.')}, strict=True)
    sd['ema_backbone.x'] = torch.zeros(1)
    torch.save({'state_dict': sd}, src)
    assert _converter().main([src, dst]) == 1
    assert 'ema_backbone.x' in capsys.readouterr().err


class CfgNode(dict):
    """Stands for the yacs config that the authors' training saves beside the weights."""


def test_pickled_config_gives_a_clear_error(tmp_path):
    src = str(tmp_path / 'with_config.pth')
    torch.save({'model': authors_dat_t_state_dict(), 'config': CfgNode(a=1)}, src)
    with pytest.raises(SystemExit, match='--allow-pickle'):
        _converter().main([src, str(tmp_path / 'out.pth')])
    assert _converter().main([src, str(tmp_path / 'out.pth'), '--allow-pickle']) == 0
