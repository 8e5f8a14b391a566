"""Neighbourhood attention against a naive per-query loop written from the numerics page
(dat_pp_reference_numerics.md, section 2: natten 0.14's semantics)."""
import pytest
import torch
import torch.nn.functional as F

from mmdat.models.layers.neighborhood_attention import (NeighborhoodAttention,
                                                         neighborhood_attention,
                                                         tiled_neighborhood_attention)


def naive_neighborhood_attention(q, k, v, rpb):
    """One query at a time (all batches and heads at once): its window starts at
    clamp(i - 3, 0, L - 7) per axis, its 49 logits are q.k + rpb[key - query + 6], softmax.
    q is already scaled."""
    B, M, H, W, d = q.shape
    K = (rpb.shape[-1] + 1) // 2
    out = torch.zeros_like(q)
    for i in range(H):
        si = min(max(i - K // 2, 0), H - K)
        for j in range(W):
            sj = min(max(j - K // 2, 0), W - K)
            keys = k[:, :, si:si + K, sj:sj + K].reshape(B, M, K * K, d)
            values = v[:, :, si:si + K, sj:sj + K].reshape(B, M, K * K, d)
            bias = rpb[:, si - i + K - 1:si - i + 2 * K - 1, sj - j + K - 1:sj - j + 2 * K - 1]
            logits = (q[:, :, i, j, None, :] * keys).sum(-1) + bias.reshape(M, K * K)
            out[:, :, i, j] = (logits.softmax(-1)[..., None] * values).sum(-2)
    return out


def naive_module(mod, x, hw):
    """The module's forward by the numerics page: zero-pad the (LN-ed) input to at least KxK
    at the right/bottom, qkv (3, M, d), q * d^-0.5, attention, crop, proj."""
    B, L, C = x.shape
    H, W = hw
    K, M = mod.kernel_size, mod.num_heads
    d = C // M
    xm = x.reshape(B, H, W, C)
    Hp, Wp = max(H, K), max(W, K)
    xm = F.pad(xm, (0, 0, 0, Wp - W, 0, Hp - H))
    qkv = F.linear(xm, mod.qkv.weight, mod.qkv.bias).reshape(B, Hp, Wp, 3, M, d)
    q, k, v = (qkv[:, :, :, i].permute(0, 3, 1, 2, 4) for i in range(3))
    z = naive_neighborhood_attention(q * d**-0.5, k, v, mod.rpb)[:, :, :H, :W]
    z = z.permute(0, 2, 3, 1, 4).reshape(B, L, C)
    return F.linear(z, mod.proj.weight, mod.proj.bias)


def _qkv(B, M, H, W, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, M, H, W, d, generator=g, dtype=dtype).requires_grad_()
            for _ in range(3)] + [
                torch.randn(M, 13, 13, generator=g, dtype=dtype).requires_grad_()]


@pytest.mark.parametrize('B,H,W', [(1, 7, 9), (3, 13, 20), (1, 7, 7), (2, 16, 11)])
@pytest.mark.parametrize('impl', ['reference', 'tiled'])
def test_functions_equal_naive_loop(B, H, W, impl):
    q, k, v, rpb = _qkv(B, 2, H, W, 4)
    fn = neighborhood_attention if impl == 'reference' else tiled_neighborhood_attention
    ref = naive_neighborhood_attention(q, k, v, rpb)
    out = fn(q, k, v, rpb)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (q, k, v, rpb), g)
    got = torch.autograd.grad(out, (q, k, v, rpb), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('tile,chunk', [((7, 7), 1), ((7, 8), 3000), ((9, 7), 2**22),
                                        ((11, 13), 5000), ((16, 16), 2**22)])
def test_tiled_any_tile_and_chunking(tile, chunk):
    """Tiles that overhang the map, chunks of one tile row: same result."""
    q, k, v, rpb = _qkv(2, 2, 15, 22, 3, seed=1)
    ref = neighborhood_attention(q, k, v, rpb)
    out = tiled_neighborhood_attention(q, k, v, rpb, tile, chunk)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v, rpb), g),
                    torch.autograd.grad(ref, (q, k, v, rpb), g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('length', range(7, 31))
def test_tiled_every_map_length(length):
    """The regular tiles' offset keeps every clamped window inside its tile's halo, for any
    length (the last tile's queries sit 0-6 rows into it)."""
    q, k, v, rpb = _qkv(1, 1, length, 8, 2, seed=length)
    ref = neighborhood_attention(q, k, v, rpb)
    out = tiled_neighborhood_attention(q, k, v, rpb, (7, 7), max_chunk_elements=1)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v, rpb), g),
                    torch.autograd.grad(ref, (q, k, v, rpb), g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_tiles_smaller_than_the_kernel_refused():
    q, k, v, rpb = _qkv(1, 1, 9, 9, 2)
    with pytest.raises(ValueError, match='at least the kernel size'):
        tiled_neighborhood_attention(q, k, v, rpb, (5, 7))


def test_gradcheck_float64():
    q, k, v, rpb = _qkv(1, 1, 9, 8, 2, seed=2)
    assert torch.autograd.gradcheck(
        lambda *t: tiled_neighborhood_attention(*t, tile=(7, 7), max_chunk_elements=1),
        (q, k, v, rpb),
        fast_mode=True)
    assert torch.autograd.gradcheck(neighborhood_attention, (q, k, v, rpb), fast_mode=True)


@pytest.mark.parametrize('hw', [(5, 6), (7, 9), (13, 20), (3, 11), (1, 1)])
@pytest.mark.parametrize('B', [1, 3])
@pytest.mark.parametrize('impl', ['tiled', 'reference'])
def test_module_equals_naive(hw, B, impl):
    """Maps smaller than the kernel (5x6, 3x11, 1x1) are zero-padded before qkv: the padded
    tokens are keys and values with the projection's biases, as in natten-based DAT++."""
    torch.manual_seed(0)
    mod = NeighborhoodAttention(16, 2).double()
    mod.init_weights()
    mod.impl = impl
    with torch.no_grad():
        mod.qkv.bias.normal_()  # the padding tokens' keys/values are these biases
    x = torch.randn(B, hw[0] * hw[1], 16, dtype=torch.float64, requires_grad=True)
    out = mod(x, hw)
    ref = naive_module(mod, x, hw)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    params = [x, mod.qkv.weight, mod.qkv.bias, mod.rpb, mod.proj.weight]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_float32_tiled_equals_reference():
    torch.manual_seed(0)
    mod = NeighborhoodAttention(64, 2)
    mod.init_weights()
    x = torch.randn(2, 30 * 41, 64, requires_grad=True)
    outs, grads = [], []
    for impl in ('reference', 'tiled'):
        mod.impl = impl
        out = mod(x, (30, 41))
        outs.append(out)
        grads.append(torch.autograd.grad(out.pow(2).sum(), (x, mod.rpb)))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_bf16_autocast_finite():
    mod = NeighborhoodAttention(32, 2)
    x = torch.randn(1, 20 * 23, 32, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = mod(x, (20, 23))
    out.float().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(mod.rpb.grad).all()


def test_bad_inputs_named():
    mod = NeighborhoodAttention(16, 2)
    with pytest.raises(ValueError, match='tokens'):
        mod(torch.randn(1, 10, 8), (2, 5))
    with pytest.raises(ValueError, match='hw_shape'):
        mod(torch.randn(1, 10, 16), (3, 5))
    with pytest.raises(ValueError, match='divisible'):
        NeighborhoodAttention(10, 3)
    with pytest.raises(ValueError, match='odd'):
        NeighborhoodAttention(16, 2, kernel_size=6)
    mod.impl = 'fast'
    with pytest.raises(ValueError, match="impl must be"):
        mod(torch.randn(1, 49, 16), (7, 7))


def test_flops_counted_as_49_products():
    """Under tracing the definition runs: mmengine's counter sees q.k and attn.v over the 49
    keys of each query, plus the projections."""
    from mmengine.analysis import FlopAnalyzer
    mod = NeighborhoodAttention(64, 2).eval()
    H, W = 14, 15
    x = torch.randn(1, H * W, 64)
    flops = FlopAnalyzer(mod, (x, (H, W))).total()
    N = H * W
    expected = N * 64 * 192 + N * 64 * 64 + 2 * N * 49 * 64
    assert abs(flops - expected) / expected < 1e-3, (flops, expected)
