"""The DAT backbone: shapes, parameter/FLOP counts, training modes, load hooks, bad input."""
import math

import pytest
import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.runner import load_checkpoint, save_checkpoint
from mmpretrain.registry import MODELS

from mmdat.models.backbones import DAT

TINY_ARCH = dict(embed_dims=[16, 32, 64, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 4],
                 groups=[1, 1, 2, 2])


def classifier(arch='tiny', num_classes=1000, **backbone):
    dims = DAT.arch_zoo[arch]['embed_dims'] if isinstance(arch, str) else arch['embed_dims']
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='DAT', arch=arch, **backbone),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=dims[-1])))


def n_params(model):
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize('size,window', [(224, 7), (384, 12)])
def test_classifier_logits(size, window):
    model = classifier('tiny', img_size=size, window_size=window).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size), mode='tensor')
    assert logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize('size', [(225, 301), (513, 769)])
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('train', [True, False])
def test_backbone_strides_at_odd_sizes(size, batch, train):
    model = DAT('tiny', out_indices=(0, 1, 2, 3)).train(train)
    with torch.set_grad_enabled(train):
        outs = model(torch.randn(batch, 3, *size))
    assert len(outs) == 4
    for i, (out, dim) in enumerate(zip(outs, [96, 192, 384, 768])):
        stride = 4 * 2**i
        assert out.shape == (batch, dim, math.ceil(size[0] / stride),
                             math.ceil(size[1] / stride))


# The paper's counts (Table 2; Tables 6-7 give DAT-T to 0.01 M): classifier at 224 (384).
@pytest.mark.parametrize('arch,params', [('tiny', 28.32), ('small', 49.70), ('base', 87.88)])
def test_param_counts(arch, params):
    assert n_params(classifier(arch)) == pytest.approx(params, abs=0.02)


@pytest.mark.parametrize('arch,size,window,gflops', [
    ('tiny', 224, 7, 4.59), ('small', 224, 7, 9.0), ('base', 224, 7, 15.8),
    ('base', 384, 12, 49.8)])
def test_flops(arch, size, window, gflops):
    model = classifier(arch, img_size=size, window_size=window).eval()
    info = get_model_complexity_info(model, input_shape=(3, size, size), show_table=False,
                                     show_arch=False)
    assert info['flops'] / 1e9 == pytest.approx(gflops, rel=0.02), info['flops_str']


def test_frozen_stages():
    model = DAT(TINY_ARCH, out_indices=(0, 1, 2, 3), frozen_stages=1)
    model.train()
    for name, p in model.named_parameters():
        frozen = name.startswith(('patch_embed', 'stages.0', 'stages.1', 'norm0', 'norm1'))
        assert p.requires_grad is not frozen, name
    assert not model.stages[1].training and model.stages[2].training
    outs = model(torch.randn(1, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is None for p in model.stages[0].parameters())
    assert all(p.grad is not None for p in model.stages[3].parameters())


def test_norm_eval():
    model = DAT(TINY_ARCH, norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and not any(m.training for m in norms)
    assert model.stages[0].blocks[0].attn.training
    assert all(m.training for m in DAT(TINY_ARCH).train().modules())


def test_with_cp_same_gradients():
    torch.manual_seed(0)
    ref = DAT(TINY_ARCH, drop_path_rate=0., out_indices=(2, 3))
    cp = DAT(TINY_ARCH, drop_path_rate=0., out_indices=(2, 3), with_cp=True)
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 70, 90)
    for m in (ref, cp):
        sum(o.square().sum() for o in m(x)).backward()
    for (name, a), b in zip(ref.named_parameters(), cp.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def _tables(model):
    return {k: v for k, v in model.state_dict().items()
            if k.endswith(('relative_position_bias_table', 'rpe_table'))}


@pytest.mark.parametrize(
    'via', ['load_state_dict', 'load_checkpoint', 'classifier_init_cfg', 'backbone_init_cfg'])
def test_resize_hooks(tmp_path, via):
    """A 224/window-7 classifier checkpoint loads into a 384/window-12 backbone."""
    src = classifier('tiny')
    src.init_weights()
    ckpt = str(tmp_path / 'cls.pth')
    save_checkpoint(src.state_dict(), ckpt)
    if via == 'load_state_dict':
        dst = DAT('tiny', img_size=384, window_size=12)
        dst.load_state_dict(src.backbone.state_dict())
    elif via == 'load_checkpoint':  # a whole classifier, keys with the backbone. prefix
        dst = classifier('tiny', img_size=384, window_size=12)
        load_checkpoint(dst, ckpt, strict=True)
        dst = dst.backbone
    elif via == 'classifier_init_cfg':  # the whole classifier's checkpoint
        dst = classifier('tiny', img_size=384, window_size=12)
        dst.init_cfg = dict(type='Pretrained', checkpoint=ckpt)
        dst.init_weights()
        dst = dst.backbone
    else:  # as det/seg configs do: a bare backbone, the backbone. part of a classifier
        dst = DAT('tiny', img_size=384, window_size=12,
                  init_cfg=dict(type='Pretrained', checkpoint=ckpt, prefix='backbone.'))
        dst.init_weights()
    src_t, dst_t = _tables(src.backbone), _tables(dst)
    assert src_t.keys() == dst_t.keys()
    for key, table in dst_t.items():
        old = src_t[key]
        if key.endswith('relative_position_bias_table'):
            assert old.shape == (13 * 13, table.shape[1]) and table.shape[0] == 23 * 23
            # the centre (zero displacement) keeps its value
            torch.testing.assert_close(table[(23 * 23) // 2], old[(13 * 13) // 2])
        else:  # deformable table (M, 2H0-1, 2W0-1): 27 -> 47 in stage 3, 13 -> 23 in stage 4
            assert table.shape[1:] == ((47, 47) if old.shape[1] == 27 else (23, 23))
            # align_corners resizing keeps the corners and the centre
            torch.testing.assert_close(table[:, 0, 0], old[:, 0, 0])
            torch.testing.assert_close(table[:, -1, -1], old[:, -1, -1])
            c, c0 = table.shape[1] // 2, old.shape[1] // 2
            torch.testing.assert_close(table[:, c, c], old[:, c0, c0])
    # everything else is copied unchanged
    src_sd, dst_sd = src.backbone.state_dict(), dst.state_dict()
    for key in src_sd:
        if key not in src_t and not key.endswith('relative_position_index'):
            torch.testing.assert_close(dst_sd[key], src_sd[key], msg=key)


def test_fixed_pos_encoding_resize():
    src = DAT(TINY_ARCH, pos_encoding='fixed', img_size=64)
    dst = DAT(TINY_ARCH, pos_encoding='fixed', img_size=96)
    dst.load_state_dict(src.state_dict())
    a = src.stages[2].blocks[1].attn.rpe_table
    b = dst.stages[2].blocks[1].attn.rpe_table
    assert a.shape == (4, 16, 16) and b.shape == (4, 36, 36)


@pytest.mark.parametrize('kwargs,exc,words', [
    (dict(arch='huge'), ValueError, 'unknown arch'),
    (dict(arch=dict(TINY_ARCH, groups=[1, 1, 3, 2])), ValueError, 'groups'),
    (dict(arch=dict(TINY_ARCH, num_heads=[1, 2, 4])), ValueError, 'num_heads'),
    (dict(arch=42), TypeError, 'arch'),
    (dict(out_indices=(4, )), ValueError, 'out_indices'),
    (dict(frozen_stages=4), ValueError, 'frozen_stages'),
    (dict(offset_range=-1.0), ValueError, 'offset_range'),
    (dict(pos_encoding='sinusoidal'), ValueError, 'pos_encoding'),
    (dict(stage_types=('swin', 'cnn', 'deformable', 'deformable')), ValueError, 'stage_types'),
])
def test_bad_config(kwargs, exc, words):
    kwargs.setdefault('arch', TINY_ARCH)
    with pytest.raises(exc, match=words):
        DAT(**kwargs)


@pytest.mark.parametrize('x,words', [
    (torch.randn(1, 4, 64, 64), 'input channels'),
    (torch.randn(3, 64, 64), '4-D'),
    (torch.randn(1, 3, 16, 64), 'at least 32x32'),
])
def test_bad_input(x, words):
    with pytest.raises(ValueError, match=words):
        DAT(TINY_ARCH)(x)
