"""Deformable-DETR-style deformable attention, single scale (DAT paper, Appendix A, Table 8).

Deformable DETR (Zhu et al., ICLR 2021, Eq. 2) with one feature level: for query ``q`` at
reference point ``p_q`` and head ``m``,

    z_q^(m) = sum_k A_mqk * (x W_v^(m))(p_q + delta p_mqk),      sum_k A_mqk = 1,
    DeformAttn(x)_q = Concat_m(z_q^(m)) W_o,

where the K offsets ``delta p_mqk`` and the K weights ``A_mqk`` are linear projections of
the query itself (``Linear(C, M*K*2)`` and ``Linear(C, M*K)`` followed by a softmax over the
K points) and the values are read by bilinear sampling. Unlike DAT, keys are not shared among
queries and there is no query-key dot product: this is the "naive adaptation" the paper's
Appendix A compares against (16 keys per query, or as many as DAT's deformable attention).

Conventions are those of the released Deformable DETR code (``ms_deform_attn_core_pytorch``):
reference points are the pixel centres in ``[0, 1]`` ``(x, y)`` coordinates, offsets are in
pixels of the feature map (``p_q + delta p / (W, H)``), sampling uses
``grid_sample(align_corners=False, padding_mode='zeros')``. Initialisation also follows it:
zero weights for both query projections, the offset bias puts point ``k`` of head ``m`` at
``(k + 1)`` pixels along direction ``2 pi m / M`` (a star of M rays), uniform attention
weights, Xavier-uniform value and output projections. A backbone has no position embedding
to add to the queries (the DETR encoder adds a sine embedding): queries are the block's
normalised tokens, as for DAT's own attention.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, xavier_init


def divide_xy(t, width, height):
    """``t / (width, height)`` over the last (x, y) axis; the sizes may be traced for export
    (tensors or symbolic ints), which a ``new_tensor`` would freeze into constants."""
    if isinstance(width, int) and isinstance(height, int):
        return t / t.new_tensor([width, height])
    return torch.stack([t[..., 0] / width, t[..., 1] / height], dim=-1)


def reference_points(height, width, device=None, dtype=None):
    """Pixel centres of a ``height x width`` map in ``[0, 1]``, shape (H*W, 2), (x, y) order."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    y, x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=-1)


def ddetr_attention(value, locations, weights):
    """Single-scale deformable attention of Deformable DETR (Eq. 2 of its paper).

    Args:
        value (Tensor): (B, M, d, H, W) projected values, one map per head.
        locations (Tensor): (B, Nq, M, K, 2) sampling points in ``[0, 1]``, (x, y) order.
        weights (Tensor): (B, Nq, M, K) attention weights, summing to 1 over K.

    Returns:
        Tensor: (B, Nq, M*d), the concatenated heads (before the output projection).
    """
    B, M, d, H, W = value.shape
    Nq, K = locations.shape[1], locations.shape[3]
    # (x W_v)(p_q + delta p_mqk): bilinear sampling of each head's value map
    grid = (2 * locations - 1).transpose(1, 2).reshape(B * M, Nq, K, 2)  # grid_sample's [-1, 1]
    sampled = F.grid_sample(value.reshape(B * M, d, H, W), grid, mode='bilinear',
                            padding_mode='zeros', align_corners=False)  # (B*M, d, Nq, K)
    # sum_k A_mqk * sampled value
    weights = weights.transpose(1, 2).reshape(B * M, Nq, K)
    z = torch.einsum('bdqk,bqk->bqd', sampled, weights)  # (B*M, Nq, d)
    return z.reshape(B, M, Nq, d).transpose(1, 2).reshape(B, Nq, M * d)


class DeformableDETRAttention(BaseModule):
    """Deformable DETR's attention with one feature level, for DAT's ``'ddetr'`` stages.

    Args:
        embed_dims (int): C.
        num_heads (int): M.
        num_points (int): K, the sampling points (keys) of each query and head. Deformable
            DETR uses 4 per level; the paper's Table 8 uses 16 and as many as DAT's keys.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self, embed_dims, num_heads, num_points=4, init_cfg=None):
        super().__init__(init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'DeformableDETRAttention: embed_dims ({embed_dims}) must be '
                             f'divisible by num_heads ({num_heads})')
        if not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f'DeformableDETRAttention: num_points must be an int >= 1, '
                             f'got {num_points!r}')
        self.embed_dims, self.num_heads, self.num_points = embed_dims, num_heads, num_points
        C, M, K = embed_dims, num_heads, num_points
        self.sampling_offsets = nn.Linear(C, M * K * 2)
        self.attention_weights = nn.Linear(C, M * K)
        self.value_proj = nn.Linear(C, C)
        self.output_proj = nn.Linear(C, C)
        self._reset_parameters()

    def _reset_parameters(self):
        """Deformable DETR's initialisation (see the module docstring)."""
        M, K = self.num_heads, self.num_points
        constant_init(self.sampling_offsets, 0.)
        thetas = torch.arange(M, dtype=torch.float32) * (2.0 * math.pi / M)
        rays = torch.stack([thetas.cos(), thetas.sin()], -1)
        rays = rays / rays.abs().max(-1, keepdim=True)[0]  # onto the unit square's border
        grid = rays[:, None, :] * torch.arange(1, K + 1, dtype=torch.float32)[None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        constant_init(self.attention_weights, 0.)
        xavier_init(self.value_proj, distribution='uniform', bias=0.)
        xavier_init(self.output_proj, distribution='uniform', bias=0.)

    def init_weights(self):
        super().init_weights()
        if self.init_cfg is None:
            self._reset_parameters()

    def forward(self, x, hw_shape):
        """x: (B, L, C) tokens of an ``hw_shape`` map -> (B, L, C)."""
        B, L, C = x.shape
        H, W = hw_shape
        M, K, d = self.num_heads, self.num_points, C // self.num_heads
        value = self.value_proj(x).transpose(1, 2).reshape(B, M, d, H, W)
        # per query: K offsets in pixels and K softmax weights for every head
        offsets = self.sampling_offsets(x).reshape(B, L, M, K, 2)
        weights = self.attention_weights(x).reshape(B, L, M, K).softmax(-1)
        ref = reference_points(H, W, x.device, x.dtype)  # (L, 2) in [0, 1], (x, y)
        locations = ref[None, :, None, None, :] + divide_xy(offsets, W, H)
        return self.output_proj(ddetr_attention(value, locations, weights))

    def extra_repr(self):
        return f'num_heads={self.num_heads}, num_points={self.num_points}'


__all__ = ['DeformableDETRAttention', 'ddetr_attention', 'reference_points']
