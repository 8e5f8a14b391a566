"""The attention variants of the ablations: PVT's SRA ('pvt' stages, Table 6 row "P") and
Deformable DETR's single-scale attention ('ddetr' stages, Table 8)."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttention,
                                              multi_scale_deformable_attn_pytorch)
from mmdet.models.backbones.pvt import SpatialReductionAttention as MMDetSRA

from mmdat.models.backbones import DAT
from mmdat.models.layers import (DeformableAttention, DeformableDETRAttention,
                                 SpatialReductionAttention, ddetr_attention)
from mmdat.models.layers.window_attention import ShiftWindowMSA

TINY_ARCH = dict(embed_dims=[16, 32, 64, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 4],
                 groups=[1, 1, 2, 2])


# ---------------------------------------------------------------- spatial-reduction attention
def naive_sra(sra, x, hw_shape):
    """SRA written out: q = x Wq; k, v from LN(Conv_sr(x)); softmax(q k^T / sqrt(d)) v Wo."""
    B, L, C = x.shape
    M, d = sra.num_heads, C // sra.num_heads
    mha = sra.attn
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    kv = x
    if sra.sr_ratio > 1:
        kv = sra.sr(x.transpose(1, 2).reshape(B, C, *hw_shape)).flatten(2).transpose(1, 2)
        kv = sra.norm(kv)
    q = (x @ w_q.T + b_q).reshape(B, L, M, d).transpose(1, 2)
    k = (kv @ w_k.T + b_k).reshape(B, -1, M, d).transpose(1, 2)
    v = (kv @ w_v.T + b_v).reshape(B, -1, M, d).transpose(1, 2)
    attn = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1)
    z = (attn @ v).transpose(1, 2).reshape(B, L, C)
    return mha.out_proj(z)


@pytest.mark.parametrize('sr_ratio,hw', [(1, (5, 7)), (4, (8, 12)), (4, (9, 13))])
def test_sra_matches_written_out_attention_and_mmdet(sr_ratio, hw):
    torch.manual_seed(0)
    sra = SpatialReductionAttention(32, 4, sr_ratio=sr_ratio).eval()
    x = torch.randn(2, hw[0] * hw[1], 32)
    out = sra(x, hw)
    assert out.shape == x.shape
    torch.testing.assert_close(out, naive_sra(sra, x, hw), rtol=1e-4, atol=1e-5)
    # mmdet's module with the same weights (same parameter names) returns x + out
    mmdet_sra = MMDetSRA(32, 4, sr_ratio=sr_ratio).eval()
    mmdet_sra.load_state_dict(sra.state_dict())
    torch.testing.assert_close(mmdet_sra(x, hw), x + out, rtol=1e-4, atol=1e-5)


def test_sra_bad_arguments_and_small_maps():
    with pytest.raises(ValueError, match='sr_ratio'):
        SpatialReductionAttention(32, 4, sr_ratio=0)
    with pytest.raises(ValueError, match='divisible'):
        SpatialReductionAttention(30, 4)
    with pytest.raises(ValueError, match='smaller than the reduction ratio 8'):
        SpatialReductionAttention(32, 4, sr_ratio=8)(torch.randn(1, 20, 32), (4, 5))


def test_pvt_stages_use_sra_in_every_block():
    model = DAT(TINY_ARCH, stage_types=('pvt', 'pvt', 'deformable', 'deformable'),
                sr_ratios=(8, 4, 2, 1), out_indices=(0, 1, 2, 3))
    for i, sr in enumerate((8, 4)):
        attns = [b.attn for b in model.stages[i].blocks]
        assert all(isinstance(a, SpatialReductionAttention) for a in attns)
        assert [a.sr_ratio for a in attns] == [sr] * len(attns)
    for i in (2, 3):
        attns = [b.attn for b in model.stages[i].blocks]
        assert isinstance(attns[0], ShiftWindowMSA) and isinstance(attns[1], DeformableAttention)
    outs = model(torch.randn(2, 3, 65, 97))  # odd sizes: the sr conv floors its output
    assert [o.shape[1:] for o in outs] == [(16, 17, 25), (32, 9, 13), (64, 5, 7), (64, 3, 4)]


# ---------------------------------------------------------------- Deformable DETR attention
def naive_bilinear(img, x, y):
    """Value of ``img`` (d, H, W) at pixel coordinates (x, y), zero outside (align_corners=F)."""
    d, H, W = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = img.new_zeros(d)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                out = out + wy * wx * img[:, yy, xx]
    return out


def test_ddetr_attention_matches_explicit_sum_and_mmcv():
    torch.manual_seed(0)
    B, M, d, H, W, K = 2, 2, 3, 4, 5, 3
    value = torch.randn(B, M, d, H, W)
    locations = torch.rand(B, H * W, M, K, 2) * 1.4 - 0.2  # some points fall outside
    weights = torch.randn(B, H * W, M, K).softmax(-1)
    out = ddetr_attention(value, locations, weights)
    assert out.shape == (B, H * W, M * d)
    # z_q^(m) = sum_k A_mqk v^(m)(p_mqk), location (x, y) in [0, 1] is pixel (xW - .5, yH - .5)
    expected = torch.zeros_like(out)
    for b in range(B):
        for q in range(H * W):
            for m in range(M):
                for k in range(K):
                    x, y = locations[b, q, m, k].tolist()
                    expected[b, q, m * d:(m + 1) * d] += weights[b, q, m, k] * naive_bilinear(
                        value[b, m], x * W - 0.5, y * H - 0.5)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # mmcv's reference implementation with one level
    mmcv_out = multi_scale_deformable_attn_pytorch(
        value.permute(0, 3, 4, 1, 2).reshape(B, H * W, M, d), torch.tensor([[H, W]]),
        locations[:, :, :, None], weights[:, :, :, None])
    torch.testing.assert_close(out, mmcv_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('hw', [(6, 6), (5, 9)])
def test_ddetr_module_matches_mmcv_single_level(hw):
    torch.manual_seed(0)
    H, W = hw
    ours = DeformableDETRAttention(32, 4, num_points=5).eval()
    theirs = MultiScaleDeformableAttention(32, 4, num_levels=1, num_points=5, dropout=0.,
                                           batch_first=True).eval()
    # same initialisation, same parameter names
    for name, p in theirs.state_dict().items():
        if 'sampling_offsets' in name or 'attention_weights' in name:
            torch.testing.assert_close(ours.state_dict()[name], p, msg=name)
    for p in ours.parameters():  # move away from the init so every term matters
        torch.nn.init.normal_(p, std=0.3)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, H * W, 32)
    ys, xs = torch.meshgrid((torch.arange(H) + 0.5) / H, (torch.arange(W) + 0.5) / W,
                            indexing='ij')
    ref = torch.stack((xs.flatten(), ys.flatten()), -1)[None, :, None].expand(2, -1, 1, -1)
    expected = theirs(x, identity=torch.zeros_like(x), reference_points=ref,
                      spatial_shapes=torch.tensor([[H, W]]),
                      level_start_index=torch.tensor([0]))
    torch.testing.assert_close(ours(x, hw), expected, rtol=1e-4, atol=1e-5)


def test_ddetr_initialisation_and_gradients():
    attn = DeformableDETRAttention(32, 4, num_points=3)
    assert attn.sampling_offsets.weight.abs().sum() == 0
    assert attn.attention_weights.weight.abs().sum() == 0
    assert attn.attention_weights.bias.abs().sum() == 0
    # head m, point k starts (k+1) pixels along direction 2 pi m / M, scaled onto the square
    bias = attn.sampling_offsets.bias.reshape(4, 3, 2)
    torch.testing.assert_close(bias[:, 0], torch.tensor([[1., 0.], [0., 1.], [-1., 0.],
                                                         [0., -1.]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[:, 2], 3 * bias[:, 0])
    attn.sampling_offsets.bias.data.normal_()
    attn.init_weights()  # restores Deformable DETR's initialisation
    torch.testing.assert_close(attn.sampling_offsets.bias.reshape(4, 3, 2), bias)
    # offsets and attention weights are learned (positions receive gradients)
    attn.attention_weights.weight.data.normal_(std=0.1)
    attn(torch.randn(1, 30, 32), (5, 6)).square().sum().backward()
    for name in ('sampling_offsets', 'attention_weights', 'value_proj', 'output_proj'):
        assert getattr(attn, name).weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize('points,key_downsample,expected', [
    (16, (4, 2, 1, 1), (16, 16)),
    ('same', (4, 2, 1, 1), (196, 49)),  # Hk0 * Wk0 of DAT-T at 224: 14x14 and 7x7
    ('same', (4, 2, 2, 1), (49, 49)),
    ((4, 4, 'same', 8), (4, 2, 1, 1), (196, 8)),
])
def test_ddetr_points_per_stage(points, key_downsample, expected):
    model = DAT('tiny', stage_types=('swin', 'swin', 'ddetr', 'ddetr'), ddetr_points=points,
                key_downsample=key_downsample)
    for i, k in zip((2, 3), expected):
        attns = [b.attn for b in model.stages[i].blocks]
        assert all(isinstance(a, ShiftWindowMSA) for a in attns[0::2])
        assert [a.num_points for a in attns[1::2]] == [k] * (len(attns) // 2)
        assert attns[1].num_heads == model.arch_settings['num_heads'][i]


def test_dat_with_ddetr_stages_trains_at_odd_sizes():
    model = DAT(TINY_ARCH, stage_types=('swin', 'swin', 'ddetr', 'ddetr'), ddetr_points='same',
                out_indices=(2, 3)).train()
    outs = model(torch.randn(2, 3, 70, 45))
    assert [o.shape[1:] for o in outs] == [(64, 5, 3), (64, 3, 2)]
    sum(o.sum() for o in outs).backward()
    assert model.stages[2].blocks[1].attn.sampling_offsets.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs,words', [
    (dict(stage_types=('swin', 'swin', 'detr', 'deformable')), 'stage_types entries'),
    (dict(ddetr_points=0), 'ddetr_points'),
    (dict(ddetr_points='all'), 'ddetr_points'),
    (dict(sr_ratios=(8, 4)), 'sr_ratios needs 4 entries'),
])
def test_bad_variant_config(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DAT(TINY_ARCH, **kwargs)


def test_grid_sample_convention_of_reference_points():
    """With zero offsets and one point, D-DETR attention reads each query's own value."""
    torch.manual_seed(0)
    attn = DeformableDETRAttention(8, 2, num_points=1)
    attn.sampling_offsets.bias.data.zero_()
    x = torch.randn(1, 12, 8)
    value = F.linear(x, attn.value_proj.weight, attn.value_proj.bias)
    torch.testing.assert_close(attn(x, (3, 4)), attn.output_proj(value), rtol=1e-5, atol=1e-6)
