"""Local and shifted-window attention (Swin-style) for DAT's window blocks.

The modules keep mmpretrain's parameters and results: its :class:`ShiftWindowMSA` pads the
map to window multiples (right/bottom), rolls it for the shift, masks the shifted windows and
crops back, so any input size works. :class:`DATShiftWindowMSA` does the same with one gather
each way (:func:`window_plan`), and :class:`WindowMSA` runs the fused
``scaled_dot_product_attention`` kernel (the relative position bias and the shift mask form its
additive mask). Under ``torch.jit`` tracing (FLOP counting) the explicit matmul path of
mmpretrain's WindowMSA is used, so the counter sees the products.
"""
import functools
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
        # (1, heads, N, N): with a 4-D mask SDPA takes its fused CPU kernel (a 3-D one sends
        # it to the unfused math path, 2-3x slower)
        bias = bias.view(N, N, -1).permute(2, 0, 1).to(q.dtype)[None]
        if mask is not None:
            nW = mask.shape[0]
            bias = (bias[:, None] + mask[None, :, None].to(q.dtype))  # (1, nW, heads, N, N)
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


def shift_mask(nh, nw, window_size, shift_size, device=None):
    """mmpretrain's shift mask of an ``nh x nw``-window padded map: (nW, w*w, w*w), -100
    between pixels of different regions of its ``img_mask`` (3 * row region + column region),
    0 within one; the counts may be traced sizes."""
    ws = window_size
    ids = (shift_window_regions(nh * ws, ws, shift_size, device)[:, None] * 3
           + shift_window_regions(nw * ws, ws, shift_size, device)[None, :])
    ids = ids.reshape(nh, ws, nw, ws).transpose(1, 2).reshape(-1, ws * ws)
    return (ids[:, None, :] != ids[:, :, None]).float() * -100.0


@functools.lru_cache(maxsize=64)
def window_plan(H, W, window_size, shift_size, device):
    """How the tokens of an H x W map go into windows, as mmpretrain's ShiftWindowMSA puts
    them: the map zero-padded (bottom, right) to window multiples, rolled by ``-shift_size``
    on both axes, cut into ``window_size``-square windows.

    Returns:
        tuple: ``gather`` (nW*w*w,) the token index of each window slot (0 for padding),
        ``padding`` (P,) the slots that hold padding, ``scatter`` (H*W,) the slot of each
        token, and the shift ``mask`` (nW, w*w, w*w) (-100 between pixels of different
        regions, ``None`` without shift), all on ``device``.
    """
    ws, shift = window_size, shift_size
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    # the rolled, padded map: slot (y', x') holds pixel ((y' + shift) % Hp, (x' + shift) % Wp)
    ys = (torch.arange(Hp) + shift) % Hp
    xs = (torch.arange(Wp) + shift) % Wp
    token = torch.where((ys[:, None] < H) & (xs[None, :] < W), ys[:, None] * W + xs[None, :],
                        -1)

    def windows(t):  # (Hp, Wp) -> (nW * ws * ws,) in window order
        return t.reshape(Hp // ws, ws, Wp // ws, ws).transpose(1, 2).reshape(-1)

    slots = windows(token)
    padding = (slots < 0).nonzero().flatten()
    scatter = torch.empty(H * W, dtype=torch.long)
    valid = slots >= 0
    scatter[slots[valid]] = valid.nonzero().flatten()
    mask = shift_mask(Hp // ws, Wp // ws, ws, shift, device) if shift > 0 else None
    return slots.clamp(min=0).to(device), padding.to(device), scatter.to(device), mask


def _regroup(x, index, zeros):
    """``x[:, index]``, rows ``zeros`` of the result set to 0."""
    y = x.index_select(1, index)
    if zeros is not None and zeros.numel():
        y.index_fill_(1, zeros, 0)
    return y


class _Regroup(torch.autograd.Function):
    """``y = x[:, index]`` with ``y[:, zeros] = 0``, where ``index`` maps the rows of y
    outside ``zeros`` one to one onto the rows of x, and ``inverse`` / ``inverse_zeros`` are
    the inverse map. The gradient is then a gather too, ``dy[:, inverse]`` (rows
    ``inverse_zeros`` zero), instead of ``index_select``'s scatter-add."""

    @staticmethod
    def forward(ctx, x, index, zeros, inverse, inverse_zeros):
        ctx.save_for_backward(index, zeros, inverse, inverse_zeros)
        return _regroup(x, index, zeros)

    @staticmethod
    def backward(ctx, grad):
        index, zeros, inverse, inverse_zeros = ctx.saved_tensors
        return _Regroup.apply(grad, inverse, inverse_zeros, index, zeros), None, None, None, None


class DATShiftWindowMSA(ShiftWindowMSA):
    """mmpretrain's ShiftWindowMSA (same parameters and results), its windows made by one
    gather and unmade by another.

    mmpretrain pads, rolls and partitions the map (three copies), and reverses, rolls back
    and crops it (three more); here one ``index_select`` with a :func:`window_plan` made once
    per map size puts the tokens into windows (padding slots zeroed), one takes them back,
    and the gradients are the inverse gathers (:class:`_Regroup`).

    While a graph is exported (see ``is_tracing``) the shapes, padding and shift mask come
    from the runtime tensors, so one exported graph serves any batch and map size (mmpretrain
    computes them as Python ints, which a traced graph keeps as constants). Only
    ``pad_small_map=True`` (DAT's setting: the shift is never dropped) is supported.
    """

    def forward(self, query, hw_shape):
        if is_tracing():
            return self._traced_forward(query, hw_shape)
        B, L, C = query.shape
        H, W = hw_shape
        if L != H * W:
            raise ValueError(f'{type(self).__name__}: hw_shape {tuple(hw_shape)} does not '
                             f'match the {L} tokens of the query')
        ws = self.window_size
        gather, padding, scatter, mask = window_plan(H, W, ws, self.shift_size, query.device)
        windows = _Regroup.apply(query, gather, padding, scatter, None)
        windows = self.w_msa(windows.view(-1, ws * ws, C), mask=mask)
        return self.drop(_Regroup.apply(windows.view(B, -1, C), scatter, None, gather, padding))

    def _traced_forward(self, query, hw_shape):
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
            mask = shift_mask(nh, nw, ws, shift, x.device).to(x.dtype)
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
