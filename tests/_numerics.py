"""Comparisons of two float32 computations of the same maths."""
import torch


def assert_close_to_scale(actual, expected, rtol=1e-5):
    """``actual`` equals ``expected`` within ``rtol`` relative to each element and to the
    tensor's scale (its largest magnitude): two float32 computations that sum in a different
    order differ by rounding relative to the magnitudes summed, also where the result cancels
    to about zero (a bias's gradient through a softmax is zero in exact arithmetic)."""
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)
