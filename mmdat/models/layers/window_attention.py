"""Local and shifted-window attention (Swin-style) for DAT's window blocks.

mmpretrain's :class:`ShiftWindowMSA` already pads the map to window multiples (right/bottom),
builds the shift mask for the padded size and crops back, so any input size works. We plug in
a :class:`WindowMSA` that runs the fused ``scaled_dot_product_attention`` kernel (the relative
position bias and the shift mask form its additive mask). Under ``torch.jit`` tracing (FLOP
counting) the explicit matmul path of mmpretrain is used, so the counter sees the products.
"""
import math

import torch
import torch.nn.functional as F
from mmpretrain.models.utils.attention import ShiftWindowMSA
from mmpretrain.models.utils.attention import WindowMSA as _WindowMSA


class WindowMSA(_WindowMSA):
    """mmpretrain's WindowMSA (same parameters) computed with the fused SDPA kernel."""

    def forward(self, x, mask=None):
        if torch.jit.is_tracing():
            return super().forward(x, mask)
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).to(q.dtype)  # (heads, N, N)
        if mask is not None:
            nW = mask.shape[0]
            bias = (bias[None, None] + mask[None, :, None].to(q.dtype))  # (1, nW, heads, N, N)
            bias = bias.expand(B_ // nW, -1, -1, -1, -1).reshape(B_, self.num_heads, N, N)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.,
            scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B_, N, C)))


def window_attention(embed_dims, num_heads, window_size, shifted):
    """Window attention of one DAT block; ``shifted`` uses the authors' shift ceil(w/2)."""
    shift = int(math.ceil(window_size / 2)) if shifted else 0
    return ShiftWindowMSA(
        embed_dims=embed_dims, num_heads=num_heads, window_size=window_size, shift_size=shift,
        dropout_layer=dict(type='DropPath', drop_prob=0.), pad_small_map=True,
        window_msa=WindowMSA)


def resize_window_bias_table(table, size):
    """Resize a ((2w-1)^2, M) relative position bias table to (size^2, M), bicubically.

    (mmpretrain's own resizer needs ``scipy.interpolate.interp2d``, removed in SciPy 1.14.)
    """
    src = int(round(table.shape[0]**0.5))
    grid = table.T.reshape(1, -1, src, src)
    grid = F.interpolate(grid, size=(size, size), mode='bicubic', align_corners=False)
    return grid.reshape(-1, size * size).T.contiguous()
