"""The chunked path's position-bias interpolations equal the reference grid_sample's."""
import pytest
import torch

from mmdat.models.layers.deformable_attention import deformable_position_bias, grid_points
from mmdat.models.layers.deformable_attention_chunked import separable_position_bias


def _key_points(B, G, Hk, Wk, table_hw, seed):
    """Deformed key points: in range, partly outside [-1, 1] (where the displacements leave
    the table), and some exactly on table entries (integer sampling positions)."""
    g = torch.Generator().manual_seed(seed)
    points = grid_points(Hk, Wk).expand(B, G, Hk, Wk, 2).reshape(B, G, Hk * Wk, 2)
    points = points + (torch.rand(points.shape, generator=g) - 0.5) * 3.0  # up to +-1.5
    points = points.clone()
    # keys whose displacement from query 0 lands exactly on a table entry (y and x)
    Ty, Tx = table_hw
    q0 = grid_points(7, 9)[0, 0]
    for n, (a, b) in enumerate([(0, 0), (3, 5), (Ty - 1, Tx - 1), (Ty // 2, 1)]):
        on_entry = torch.tensor([a / (Ty - 1), b / (Tx - 1)]) * 2 - 1  # normalised R
        points[0, n % G, n // G] = q0 - 2 * on_entry
    return points


@pytest.mark.parametrize('B,M,G,Hk,Wk,table_hw', [
    (2, 6, 3, 5, 3, (13, 13)),
    (2, 4, 1, 5, 3, (13, 11)),
    (1, 4, 2, 2, 1, (3, 5)),
])
def test_separable_bias_equals_grid_sample(B, M, G, Hk, Wk, table_hw):
    torch.manual_seed(0)
    H, W = 7, 9
    table = torch.randn(M, *table_hw)
    query = grid_points(H, W)
    points = _key_points(B, G, Hk, Wk, table_hw, seed=1)
    assert (points.abs() > 1).any()  # part of the keys lie outside the map
    # ... and some displacements index the table exactly at an entry in y and x
    index = ((query[0, 0] - points) * 0.5 + 1) * 0.5 * (torch.tensor(table_hw) - 1)
    assert (index == index.round()).all(-1).any()

    outs, grads = [], []
    for fn in ('reference', 'separable'):
        t = table.clone().requires_grad_()
        p = points.clone().requires_grad_()
        if fn == 'reference':
            bias = deformable_position_bias(t, query.reshape(-1, 2), p)
        else:
            bias = separable_position_bias(t, query[:, 0, 0], query[0, :, 1], p)
        weight = torch.randn(bias.shape, generator=torch.Generator().manual_seed(2))
        (bias * weight).sum().backward()
        outs.append(bias)
        grads.append((t.grad, p.grad))

    for out, (grad_table, grad_points) in zip(outs[1:], grads[1:]):
        assert out.shape == (B, M, H * W, Hk * Wk)
        torch.testing.assert_close(out, outs[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(grad_table, grads[0][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(grad_points, grads[0][1], rtol=1e-5, atol=1e-5)
    assert outs[0].abs().sum() > 0 and grads[0][1].abs().sum() > 0


def test_separable_bias_far_outside_is_zero():
    """Keys so far out that every displacement leaves the table: zero bias, zero grads."""
    table = torch.randn(2, 5, 5, requires_grad=True)
    query = grid_points(3, 4)
    points = torch.full((1, 1, 2, 2), 9.0, requires_grad=True)
    bias = separable_position_bias(table, query[:, 0, 0], query[0, :, 1], points)
    bias.sum().backward()
    assert bias.abs().max() == 0 and table.grad.abs().max() == 0
    assert points.grad.abs().max() == 0


def test_separable_bias_chunked_rows_match_whole_grid():
    """Rows of the query grid (as the chunked path passes them) give the matching rows."""
    torch.manual_seed(0)
    table = torch.randn(4, 9, 9)
    query = grid_points(6, 5)
    points = torch.rand(2, 2, 12, 2) * 2.4 - 1.2
    whole = separable_position_bias(table, query[:, 0, 0], query[0, :, 1], points)
    part = separable_position_bias(table, query[2:4, 0, 0], query[0, :, 1], points)
    torch.testing.assert_close(part, whole.reshape(2, 4, 6, 5, 12)[:, :, 2:4].flatten(2, 3))


def _attention_inputs(seed=0, B=2, C=12, M=6, G=3, H=7, W=9, Hk=5, Wk=3):
    g = torch.Generator().manual_seed(seed)
    q, x = torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g)
    points = grid_points(Hk, Wk).expand(B, G, Hk, Wk, 2)
    points = points + (torch.rand(points.shape, generator=g) - 0.5) * 1.5
    w_k, w_v = torch.randn(C, C, generator=g) * 0.3, torch.randn(C, C, generator=g) * 0.3
    b_k, b_v = torch.randn(C, generator=g), torch.randn(C, generator=g)
    table = torch.randn(M, 13, 13, generator=g)
    return q, x, points, w_k, b_k, w_v, b_v, M, table


@pytest.mark.parametrize('position_bias', ['grid_sample', 'separable'])
@pytest.mark.parametrize('chunk', [2**22, 0])
def test_chunked_attention_position_bias_paths(position_bias, chunk):
    """Both bias interpolations of the chunked path give the reference's values and grads."""
    from mmdat.models.layers.deformable_attention import deformable_attention
    from mmdat.models.layers.deformable_attention_chunked import \
        chunked_deformable_attention
    q, x, points, w_k, b_k, w_v, b_v, M, table = _attention_inputs()
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    results = []
    for fn in (deformable_attention, chunked_deformable_attention):
        leaves = [t.clone().requires_grad_() for t in (q, x, points, table)]
        kwargs = {} if fn is deformable_attention else dict(
            max_chunk_elements=chunk, position_bias=position_bias)
        out = fn(leaves[0], leaves[1], leaves[2], w_k, b_k, w_v, b_v, M, rpe_table=leaves[3],
                 **kwargs)
        out.backward(grad_out)
        results.append([out.detach()] + [t.grad for t in leaves])
    for a, b in zip(results[1], results[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_attention_bf16_autocast_matches_reference():
    """Under bfloat16 autocast the chunked path keeps the reference's precision choices
    (bias and softmax in float32), also when it recomputes the chunks for the backward pass,
    so both agree to bfloat16 matmul rounding, values and gradients."""
    from mmdat.models.layers.deformable_attention import deformable_attention
    from mmdat.models.layers.deformable_attention_chunked import \
        chunked_deformable_attention
    results = []
    for fn, kwargs in ((deformable_attention, {}),
                       (chunked_deformable_attention, dict(max_chunk_elements=0))):
        q, x, points, w_k, b_k, w_v, b_v, M, table = _attention_inputs(seed=4)
        leaves = [t.requires_grad_() for t in (q, x, points, table)]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fn(q, x, points, w_k, b_k, w_v, b_v, M, rpe_table=table, **kwargs)
        out.float().pow(2).sum().backward()
        results.append([out] + [t.grad for t in leaves])
    (ref, *ref_grads), (out, *grads) = results
    assert out.dtype == ref.dtype
    # (adding the bias to bfloat16 logits would be off by ~1.6e-2 here)
    torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=1e-3)
    for a, b in zip(grads, ref_grads):  # (each is ~0.5-0.9 % from the float32 gradient)
        assert a.dtype == b.dtype
        assert (a - b).norm() <= 5e-3 * b.norm()


def test_chunked_attention_rejects_unknown_position_bias():
    from mmdat.models.layers.deformable_attention_chunked import \
        chunked_deformable_attention
    q, x, points, w_k, b_k, w_v, b_v, M, table = _attention_inputs()
    with pytest.raises(ValueError, match='position_bias'):
        chunked_deformable_attention(q, x, points, w_k, b_k, w_v, b_v, M, rpe_table=table,
                                     position_bias='bicubic')
