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

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _converter():
    path = osp.join(ROOT, 'tools', 'model_converters', 'dat_to_mmdat.py')
    spec = importlib.util.spec_from_file_location('dat_to_mmdat', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
            if d % 2 == 1 and i >= 2:  # deformable
                Cg = C // groups[i]
                put(a + 'conv_offset.0.weight', Cg, 1, kernels[i], kernels[i])
                put(a + 'conv_offset.0.bias', Cg)
                put(a + 'conv_offset.1.norm.weight', Cg)
                put(a + 'conv_offset.1.norm.bias', Cg)
                put(a + 'conv_offset.3.weight', 2, Cg, 1, 1)
                for proj in ('proj_q', 'proj_k', 'proj_v', 'proj_out'):
                    put(a + proj + '.weight', C, C, 1, 1)
                    put(a + proj + '.bias', C)
                put(a + 'rpe_table', M, 2 * feat[i] - 1, 2 * feat[i] - 1)
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
