"""Comparisons of two float32 computations of the same maths."""
import torch


def assert_close_to_scale(actual, expected, rtol=1e-5):
    """``actual`` equals ``expected`` within ``rtol`` relative to each element and to the
    tensor's scale (its largest magnitude): two float32 computations that sum in a different
    order differ by rounding relative to the magnitudes summed, also where the result cancels
    to about zero (a bias's gradient through a softmax is zero in exact arithmetic)."""
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


def assert_grads_close_to_scale(grads, expected, rtol=1e-5):
    """Two dicts of parameter gradients (name -> tensor) of an attention are equal as by
    :func:`assert_close_to_scale`. The key projection's bias is the exception: its gradient
    is zero in exact arithmetic (a softmax ignores the term ``q . b_k`` common to a row), so
    both must be rounding noise, below ``rtol`` of the scale of the key weights' gradient."""
    assert grads.keys() == expected.keys()
    for name, b in expected.items():
        if name.endswith('proj_k.bias'):
            scale = expected[name[:-len('bias')] + 'weight'].abs().max()
            assert grads[name].abs().max() <= rtol * scale and b.abs().max() <= rtol * scale
        else:
            assert_close_to_scale(grads[name], b, rtol)
