"""DAT's window blocks (gather-based windows, fused attention kernel) against mmpretrain's
ShiftWindowMSA and WindowMSA, the modules whose parameters and results they keep."""
import pytest
import torch
from mmpretrain.models.utils.attention import ShiftWindowMSA
from mmpretrain.models.utils.attention import WindowMSA as MMPretrainWindowMSA
from _numerics import assert_close_to_scale

from mmdat.models.layers.window_attention import window_attention, window_plan


def _outputs_and_grads(module, forward, x, grad, hw):
    module.zero_grad()
    x = x.clone().requires_grad_()
    out = forward(x, hw)
    out.backward(grad)
    return [out, x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shifted', [False, True])
@pytest.mark.parametrize('hw', [(7, 7), (14, 21), (13, 9), (5, 4), (1, 1), (22, 15)])
def test_window_blocks_equal_mmpretrain(shifted, hw, dtype):
    """Values and gradients equal mmpretrain's pad / roll / partition path (its
    ``ShiftWindowMSA.forward`` and its matmul ``WindowMSA``) on the same parameters; in
    float32 through SDPA's fused kernel (float64 takes its math path)."""
    torch.manual_seed(0)
    attn = window_attention(32, 4, 7, shifted).to(dtype)
    with torch.no_grad():
        attn.w_msa.relative_position_bias_table.normal_()
    x = torch.randn(2, hw[0] * hw[1], 32, dtype=dtype)
    grad = torch.randn_like(x)
    mmpretrain_msa = MMPretrainWindowMSA.forward.__get__(attn.w_msa)
    w_msa_forward = attn.w_msa.forward
    ours = _outputs_and_grads(attn, attn.forward, x, grad, hw)
    try:
        attn.w_msa.forward = mmpretrain_msa
        ref = _outputs_and_grads(attn, lambda q, s: ShiftWindowMSA.forward(attn, q, s), x, grad,
                                 hw)
    finally:
        attn.w_msa.forward = w_msa_forward
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        if dtype == torch.float64:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        else:
            assert_close_to_scale(a, b)


def test_window_plan_is_a_permutation_with_padding():
    gather, padding, scatter, mask = window_plan(10, 9, 7, 4, torch.device('cpu'))
    assert gather.numel() == 14 * 14 and padding.numel() == 14 * 14 - 90
    valid = torch.ones(gather.numel(), dtype=torch.bool)
    valid[padding] = False
    assert torch.equal(gather[scatter], torch.arange(90))  # each token in its slot
    assert sorted(scatter.tolist()) == valid.nonzero().flatten().tolist()
    assert mask.shape == (4, 49, 49) and set(mask.unique().tolist()) == {0.0, -100.0}
    assert window_plan(10, 9, 7, 0, torch.device('cpu'))[3] is None


def test_window_block_rejects_mismatched_shape():
    attn = window_attention(32, 4, 7, True)
    with pytest.raises(ValueError, match='hw_shape'):
        attn(torch.randn(1, 30, 32), (5, 5))
