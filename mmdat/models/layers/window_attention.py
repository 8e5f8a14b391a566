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

from .deformable_attention import is_tracing


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


def shift_window_regions(length, window_size, shift_size, device=None):
    """Region id (0, 1, 2) of each position of a padded axis for the shift mask: the slices
    ``[0, L-w)``, ``[L-w, L-s)``, ``[L-s, L)`` of mmpretrain's ``get_attn_mask``; ``length`` may
    be a traced size."""
    i = torch.arange(length, device=device)
    return (i >= length - window_size).long() + (i >= length - shift_size).long()


class DATShiftWindowMSA(ShiftWindowMSA):
    """mmpretrain's ShiftWindowMSA (same parameters and eager results) whose shapes, padding
    and shift mask come from the runtime tensors while a graph is exported (see
    ``is_tracing``), so one exported graph serves any batch and map size.

    mmpretrain computes them as Python ints, which a traced graph keeps as constants.
    Only ``pad_small_map=True`` (DAT's setting: the shift is never dropped) is supported here.
    """

    def forward(self, query, hw_shape):
        if not is_tracing():
            return super().forward(query, hw_shape)
        B, L, C = query.shape
        H, W = hw_shape
        ws, shift = self.window_size, self.shift_size
        x = query.reshape(B, H, W, C)
        # windows per axis first, the padded size as their multiple (simpler for torch.export)
        nh, nw = (H + ws - 1) // ws, (W + ws - 1) // ws
        Hp, Wp = nh * ws, nw * ws
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
        mask = None
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            # the region ids of mmpretrain's img_mask: 3 * row region + column region
            ids = (shift_window_regions(Hp, ws, shift, x.device)[:, None] * 3
                   + shift_window_regions(Wp, ws, shift, x.device)[None, :])
            ids = ids.reshape(nh, ws, nw, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
            mask = (ids[:, None, :] != ids[:, :, None]).to(x.dtype) * -100.0
        windows = x.reshape(B, nh, ws, nw, ws, C).permute(0, 1, 3, 2, 4, 5)
        windows = self.w_msa(windows.reshape(-1, ws * ws, C), mask=mask)
        x = windows.reshape(B, nh, nw, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :H, :W, :].reshape(B, L, C)
        return self.drop(x)


def window_attention(embed_dims, num_heads, window_size, shifted):
    """Window attention of one DAT block; ``shifted`` uses the authors' shift ceil(w/2)."""
    shift = int(math.ceil(window_size / 2)) if shifted else 0
    return DATShiftWindowMSA(
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
