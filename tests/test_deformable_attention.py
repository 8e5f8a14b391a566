"""The deformable attention against a naive reference written from the numerics page."""
import math

import pytest
import torch
import torch.nn.functional as F
from _numerics import assert_close_to_scale, assert_grads_close_to_scale

from mmdat.models.layers import DeformableAttention


def bilinear(img, y, x):
    """Sample img (C, H, W) at normalised (y, x), align_corners=True, zeros outside."""
    C, H, W = img.shape
    py, px = (y + 1) / 2 * (H - 1), (x + 1) / 2 * (W - 1)
    y0, x0 = math.floor(py), math.floor(px)
    out = img.new_zeros(C)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            w = max(0.0, 1 - abs(py - yy)) * max(0.0, 1 - abs(px - xx))
            if 0 <= yy < H and 0 <= xx < W and w > 0:
                out = out + w * img[:, yy, xx]
    return out


def naive_deformable_attention(mod, x):
    """Loops over groups, heads, queries and keys, following the numerics page step by step."""
    B, C, H, W = x.shape
    M, G = mod.num_heads, mod.groups
    d, Cg = C // M, C // G
    r, s = mod.key_downsample, mod.offset_range
    # 1. q = Conv1x1(x)
    q = torch.einsum('oc,bchw->bohw', mod.proj_q.weight[:, :, 0, 0], x) + \
        mod.proj_q.bias[None, :, None, None]
    outs = []
    for b in range(B):
        z = torch.zeros(C, H * W, dtype=x.dtype)
        pos = {}
        for g in range(G):
            qg = q[b:b + 1, g * Cg:(g + 1) * Cg]
            # 2. offset network: dwconv (stride r) -> LN -> GELU -> 1x1 (no bias)
            dw = mod.conv_offset[0]
            o = F.conv2d(qg, dw.weight, dw.bias, stride=r, padding=dw.padding, groups=Cg)
            ln = mod.conv_offset[1]
            o = F.layer_norm(o.permute(0, 2, 3, 1), (Cg, ), ln.weight, ln.bias, ln.eps)
            o = F.gelu(o.permute(0, 3, 1, 2))
            o = F.conv2d(o, mod.conv_offset[3].weight)[0]  # (2, Hk, Wk)
            Hk, Wk = o.shape[1:]
            pts = []
            for i in range(Hk):
                for j in range(Wk):
                    # 4. reference points; 3. bounded offsets
                    ry, rx = (i + 0.5) / Hk * 2 - 1, (j + 0.5) / Wk * 2 - 1
                    if mod.use_offsets:
                        ry = ry + torch.tanh(o[0, i, j]) * s / Hk
                        rx = rx + torch.tanh(o[1, i, j]) * s / Wk
                    pts.append((float(ry), float(rx)))
            pos[g] = pts
        # 5. sampled features from x, per group; 6. k, v projections
        keys_per_group = []
        for g in range(G):
            keys_per_group.append(torch.stack(
                [bilinear(x[b, g * Cg:(g + 1) * Cg], py, px) for py, px in pos[g]], dim=1))
        xs = torch.cat(keys_per_group, dim=0)  # (C, Nk)
        k = mod.proj_k.weight[:, :, 0, 0] @ xs + mod.proj_k.bias[:, None]
        v = mod.proj_v.weight[:, :, 0, 0] @ xs + mod.proj_v.bias[:, None]
        Nk = xs.shape[1]
        for m in range(M):
            g = m // (M // G)
            for qi in range(H * W):
                i, j = divmod(qi, W)
                qy, qx = (i + 0.5) / H * 2 - 1, (j + 0.5) / W * 2 - 1
                logits = []
                for n in range(Nk):
                    a = (q[b, m * d:(m + 1) * d, i, j] * k[m * d:(m + 1) * d, n]).sum()
                    a = a / math.sqrt(d)
                    if mod.pos_encoding == 'relative':
                        # 7. bias sampled at the displacement (q_pos - pos) / 2
                        py, px = pos[g][n]
                        a = a + bilinear(mod.rpe_table[m:m + 1], (qy - py) * 0.5,
                                         (qx - px) * 0.5)[0]
                    elif mod.pos_encoding == 'fixed':
                        a = a + mod.rpe_table[m, qi, n]
                    logits.append(a)
                attn = torch.softmax(torch.stack(logits), 0)
                z[m * d:(m + 1) * d, qi] = (v[m * d:(m + 1) * d] * attn[None]).sum(1)
        z = z.reshape(C, H, W)
        if mod.pos_encoding == 'dwconv':
            z = z + mod.rpe_table(q[b:b + 1])[0]
        out = torch.einsum('oc,chw->ohw', mod.proj_out.weight[:, :, 0, 0], z) + \
            mod.proj_out.bias[:, None, None]
        outs.append(out)
    return torch.stack(outs)


def _module(pos_encoding='relative', use_offsets=True, key_downsample=1, feat=(5, 6),
            offset_range=2.0, **kw):
    torch.manual_seed(0)
    mod = DeformableAttention(16, num_heads=4, groups=2, feat_size=feat,
                              key_downsample=key_downsample, offset_range=offset_range,
                              offset_kernel=3,
                              pos_encoding=pos_encoding, use_offsets=use_offsets, **kw)
    mod.init_weights()
    with torch.no_grad():  # make offsets and tables large enough to matter
        mod.conv_offset[3].weight.normal_(0, 1.0)
        if isinstance(mod.rpe_table, torch.nn.Parameter):
            mod.rpe_table.normal_(0, 1.0)
    return mod.double()


@pytest.mark.parametrize('pos_encoding', ['relative', 'none', 'fixed', 'dwconv'])
@pytest.mark.parametrize('use_offsets', [True, False])
def test_matches_naive_reference(pos_encoding, use_offsets):
    mod = _module(pos_encoding, use_offsets)
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    out = mod(x.flatten(2).transpose(1, 2), (5, 6)).transpose(1, 2).reshape(2, 16, 5, 6)
    ref = naive_deformable_attention(mod, x)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_matches_naive_reference_with_key_downsampling_and_other_size():
    # r = 2 and an input larger than the table's pretraining size: the relative table is
    # indexed in normalised coordinates and serves any size unchanged
    mod = _module('relative', True, key_downsample=2, feat=(3, 3))
    x = torch.randn(1, 16, 7, 5, dtype=torch.float64)
    out = mod(x.flatten(2).transpose(1, 2), (7, 5)).transpose(1, 2).reshape(1, 16, 7, 5)
    torch.testing.assert_close(out, naive_deformable_attention(mod, x), rtol=1e-9, atol=1e-9)


def test_gradcheck_and_offset_gradients():
    mod = _module('relative', True)
    x = torch.randn(1, 30, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mod(t, (5, 6)), (x, ), eps=1e-6, atol=1e-5)
    mod.zero_grad()
    mod(x, (5, 6)).square().sum().backward()
    for p in mod.conv_offset.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert mod.rpe_table.grad.abs().sum() > 0


@pytest.mark.parametrize('s', [0.0, 0.5, 2.0, 8.0])
def test_offsets_never_exceed_bound(s):
    mod = _module()
    mod.offset_range = s
    with torch.no_grad():
        mod.conv_offset[3].weight.mul_(1000.0)  # saturate tanh
    q = mod.proj_q(torch.randn(2, 16, 9, 7, dtype=torch.float64))
    pts = mod.deformed_points(q)
    Hk, Wk = pts.shape[2:4]
    mod.use_offsets = False
    grid = mod.deformed_points(q)  # the reference points
    off = (pts - grid).abs()
    assert (off[..., 0] <= s / Hk + 1e-12).all() and (off[..., 1] <= s / Wk + 1e-12).all()
    if s > 0:
        assert off.max() > 0.9 * s / max(Hk, Wk)
    else:
        assert off.max() == 0


#: DAT++'s conventions (spec 3.2): shifted key grid, corner query grid, unbounded offsets
DAT_PP_CONVENTIONS = dict(offset_range=-1.0, reference_grid='shifted', query_grid='corners')


@pytest.mark.parametrize('variant', [
    dict(pos_encoding='relative'), dict(pos_encoding='fixed'), dict(pos_encoding='none'),
    dict(pos_encoding='relative', use_offsets=False),
    dict(pos_encoding='relative', **DAT_PP_CONVENTIONS),
    dict(pos_encoding='relative', use_offsets=False, **DAT_PP_CONVENTIONS)],
    ids=['relative', 'fixed', 'none', 'no-offsets', 'dat++', 'dat++-no-offsets'])
@pytest.mark.parametrize('hw,r,batch', [((5, 6), 1, 2), ((14, 14), 1, 1), ((23, 17), 2, 2),
                                        ((9, 31), 3, 1)])
@pytest.mark.parametrize('splits', [1, 2, 3])
def test_chunked_path_equals_reference(variant, hw, r, batch, splits, monkeypatch):
    """The memory-lean path gives the reference's values and gradients: float32, within 1e-5
    relative (to each element and to the tensor's scale, see ``assert_close_to_scale``), in
    one chunk, in chunks of 7 queries and in one query per chunk, with the position bias of
    1, 2 or 3 sub-chunks sampled in one call (the last one padded)."""
    from mmdat.models.layers import deformable_attention_chunked as chunked
    monkeypatch.setattr(chunked, '_bias_splits', lambda maps, device: splits)
    torch.manual_seed(0)
    variant = dict(variant)
    mod = _module(variant.pop('pos_encoding'), key_downsample=r, feat=(7, 7), **variant).float()
    x = torch.randn(batch, hw[0] * hw[1], 16)
    grad_out = torch.randn(batch, hw[0] * hw[1], 16)
    seven = 7 * batch * mod.num_heads * math.prod(mod.key_grid_size(*hw))
    results = []
    for impl, chunk_size in (('reference', None), ('chunked', 2**22), ('chunked', seven),
                             ('chunked', 0)):
        mod.impl, mod.chunk_size = impl, chunk_size  # chunk_size 0: one query per chunk
        mod.zero_grad()
        xi = x.clone().requires_grad_()
        out = mod(xi, hw)
        out.backward(grad_out)
        results.append((out.detach(), xi.grad, {n: p.grad.clone() for n, p in
                                                mod.named_parameters() if p.grad is not None}))
    ref = results[0]
    for out, gx, gp in results[1:]:
        assert_close_to_scale(out, ref[0])
        assert_close_to_scale(gx, ref[1])
        assert_grads_close_to_scale(gp, ref[2])


def test_auto_dispatch(monkeypatch):
    mod = _module().float()
    calls = []
    from mmdat.models.layers import deformable_attention_chunked as chunked
    orig = chunked.chunked_deformable_attention

    def spy(*args, **kwargs):
        calls.append(True)
        return orig(*args, **kwargs)

    monkeypatch.setattr(chunked, 'chunked_deformable_attention', spy)
    mod.chunk_threshold = 10**9
    mod(torch.randn(1, 30, 16), (5, 6))
    assert not calls  # small, with gradients: the reference path
    with torch.no_grad():
        mod(torch.randn(1, 30, 16), (5, 6))
    assert len(calls) == 1  # no gradient needed: the chunked path's fused kernel
    mod.chunk_threshold = 0
    mod(torch.randn(1, 30, 16), (5, 6))
    assert len(calls) == 2  # large: the chunked path
    mod.impl = 'bogus'
    with pytest.raises(ValueError, match='impl'):
        mod(torch.randn(1, 30, 16), (5, 6))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_assert_finite(dtype):
    """NaN and Inf anywhere raise; large finite values whose sum overflows do not."""
    from mmdat.models.layers.deformable_attention import assert_finite
    x = torch.ones(3, 50, 7, dtype=dtype)
    assert_finite(x, 'bad')
    big = torch.full((3, 50, 7), torch.finfo(dtype).max, dtype=dtype)
    assert_finite(big, 'bad')  # the sum is Inf: told apart by the exact check
    assert_finite(torch.cat([big, -big]), 'bad')  # the sum may be NaN
    for value in (float('nan'), float('inf'), float('-inf')):
        y = x.clone()
        y[2, 17, 3] = value
        with pytest.raises(ValueError, match='bad'):
            assert_finite(y, 'bad')


def test_displacement_planes_gradients():
    """The displacements' own backward (sums in grid_sample's memory order) against
    autograd's numerical gradients, first and second order, and the plain broadcast sum."""
    from mmdat.models.layers.deformable_attention import displacement_planes
    torch.manual_seed(0)
    q = torch.randn(2, 3, 5, dtype=torch.double, requires_grad=True)  # (2, S, Nq)
    k = torch.randn(2, 2, 4, 7, dtype=torch.double, requires_grad=True)  # (2, B, G, Nk)
    assert torch.autograd.gradcheck(displacement_planes, (q, k))
    assert torch.autograd.gradgradcheck(displacement_planes, (q, k))
    R = displacement_planes(q, k)
    assert R.shape == (2, 3, 2, 4, 5, 7) and R.grad_fn is not None
    torch.testing.assert_close(R, q[:, :, None, None, :, None] + k[:, None, :, :, None, :])
