"""PVT's spatial-reduction attention (SRA) for DAT's ``'pvt'`` stages (Table 6, row "P").

SRA (Wang et al., ICCV 2021) is multi-head attention whose keys and values come from the map
reduced by a ``sr x sr`` stride-``sr`` convolution followed by LayerNorm, so a stage of
``H x W`` queries attends to ``(H/sr) x (W/sr)`` keys:

    SRA(x) = MHA(q=x, k=LN(Conv_sr(x)), v=LN(Conv_sr(x))).

The module mirrors mmdet's ``mmdet.models.backbones.pvt.SpatialReductionAttention`` (same
layers and parameter names: ``attn.in_proj_*``, ``attn.out_proj``, ``sr``, ``norm``, so
weights move between the two; ``tests/test_attention_variants.py`` checks they agree),
written out here rather than subclassed so that mmdat does not depend on mmdet's internals
(mmdet's forward and constructor carry mmcv-version switches we do not need). mmdet's
module adds its input back (``identity + out``) as it is the whole residual branch of a PVT
block; DAT's block adds the shortcut itself, so this one returns the attention output alone.
"""
import torch.nn as nn
from mmengine.model import BaseModule


class SpatialReductionAttention(BaseModule):
    """PVT's SRA returning the attention output only (DATBlock adds the shortcut).

    Args:
        embed_dims (int): C.
        num_heads (int): M.
        sr_ratio (int): the reduction ratio ``sr`` of the keys/values (PVT: 8, 4, 2, 1 in
            stages 1-4); 1 is plain global multi-head attention.
        qkv_bias (bool): biases of the q/k/v projections. Defaults to True.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self, embed_dims, num_heads, sr_ratio=1, qkv_bias=True, init_cfg=None):
        super().__init__(init_cfg)
        if not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(f'SpatialReductionAttention: sr_ratio must be an int >= 1, '
                             f'got {sr_ratio!r}')
        if embed_dims % num_heads != 0:
            raise ValueError(f'SpatialReductionAttention: embed_dims ({embed_dims}) must be '
                             f'divisible by num_heads ({num_heads})')
        self.embed_dims, self.num_heads, self.sr_ratio = embed_dims, num_heads, sr_ratio
        # sequence-first, and called with need_weights=True as mmcv's MultiheadAttention:
        # the explicit bmm path (no fused kernel), which FLOP counters see
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x, hw_shape):
        """x: (B, L, C) tokens of an ``hw_shape`` map -> (B, L, C) attention output."""
        H, W = hw_shape
        B, L, C = x.shape
        kv = x
        if self.sr_ratio > 1:
            if min(H, W) < self.sr_ratio:
                raise ValueError(f'SpatialReductionAttention: a {H}x{W} map is smaller than '
                                 f'the reduction ratio {self.sr_ratio}; use a larger input '
                                 f'or a smaller sr_ratio')
            kv = self.sr(x.transpose(1, 2).reshape(B, C, H, W))  # floors odd sizes
            kv = self.norm(kv.flatten(2).transpose(1, 2))
        q, kv = x.transpose(0, 1), kv.transpose(0, 1)
        return self.attn(q, kv, kv)[0].transpose(0, 1)

    def extra_repr(self):
        return f'sr_ratio={self.sr_ratio}'
