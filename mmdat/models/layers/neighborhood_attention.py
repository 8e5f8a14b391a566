"""Neighbourhood attention (Hassani et al., NAT, CVPR 2023), as DAT++'s N blocks use it.

Every query attends to the ``K x K`` keys around it (K = 7 in DAT++), the window clamped to
stay inside the map, plus a learnt relative position bias ``rpb`` of shape (M, 2K-1, 2K-1).
The semantics are those of natten 0.14 (the library of the authors' DAT++ code), pinned down in
``shared/reference/dat_pp_reference_numerics.md`` section 2, for dilation 1:

* per axis, the window of query ``i`` on a map of length ``L >= K`` starts at
  ``s_i = clamp(i - K // 2, 0, L - K)``: at a border the query is off-centre in its window;
* the logit of query (i, j) and key (a, c) is ``<q_ij, k_ac> + rpb[:, a - i + K - 1,
  c - j + K - 1]`` with q already scaled by ``d ** -0.5``; softmax over the K*K keys;
* maps smaller than the kernel are zero-padded at the right/bottom **before** the qkv
  projection (:class:`NeighborhoodAttention`), so padded tokens take part as keys and values
  with the projection's biases; the output is cropped back.

:func:`neighborhood_attention` is the definition, written to be read line by line against the
above: it gathers each query's K*K keys (K*K copies of the key map). :func:`tiled_neighborhood_attention`
computes the same without those copies: queries in tiles of ``Ty x Tx`` attend to their tile's
halo of ``(Ty + K - 1) x (Tx + K - 1)`` keys through one ``scaled_dot_product_attention`` per
chunk, the keys outside each query's window masked by ``-inf`` in the bias. The bias of a tile
depends on its position only at the borders, so it is built once per *class* of tiles (first,
interior, last per axis) from the small table, and its gradient is reduced per class before it
reaches the table. The forward pass keeps no chunk's tensors; the backward pass recomputes one
chunk at a time (as :mod:`.deformable_attention_chunked` does).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.autograd.function import once_differentiable

from .deformable_attention import is_tracing, sampling_dtype


def window_starts(length, kernel_size, device=None):
    """natten's window start per position of an axis: ``clamp(i - K // 2, 0, L - K)``, (L,)."""
    i = torch.arange(length, device=device)
    return (i - kernel_size // 2).clamp(0, length - kernel_size)


def neighborhood_attention(q, k, v, rpb):
    """Neighbourhood attention, by its definition.

    Args:
        q (Tensor): (B, M, H, W, d) queries, already scaled by ``d ** -0.5``.
        k, v (Tensor): (B, M, H, W, d) keys and values.
        rpb (Tensor): (M, 2K-1, 2K-1) relative position bias; K, the kernel size, is read from
            it, as natten does. The map must be at least K x K (pad it first).

    Returns:
        Tensor: (B, M, H, W, d), each query's softmax-weighted sum of its window's values.
    """
    B, M, H, W, d = q.shape
    K = (rpb.shape[-1] + 1) // 2
    # the K x K window of query (i, j): rows s_i .. s_i + K - 1, columns s_j .. s_j + K - 1
    rows = window_starts(H, K, q.device)[:, None] + torch.arange(K, device=q.device)  # (H, K)
    cols = window_starts(W, K, q.device)[:, None] + torch.arange(K, device=q.device)  # (W, K)
    rows, cols = rows[:, None, :, None], cols[None, :, None, :]  # (H, 1, K, 1), (1, W, 1, K)
    k_win = k[:, :, rows, cols].reshape(B, M, H, W, K * K, d)
    v_win = v[:, :, rows, cols].reshape(B, M, H, W, K * K, d)
    # bias index: key - query + K - 1 per axis
    dy = rows - torch.arange(H, device=q.device)[:, None, None, None] + K - 1
    dx = cols - torch.arange(W, device=q.device)[None, :, None, None] + K - 1
    bias = rpb[:, dy, dx].reshape(M, H, W, K * K)
    logits = torch.matmul(q[..., None, :], k_win.transpose(-1, -2))[..., 0, :] + bias
    attn = logits.to(sampling_dtype(logits.dtype)).softmax(dim=-1).to(v.dtype)
    return torch.matmul(attn[..., None, :], v_win)[..., 0, :]


# ----------------------------------------------------------------------------- tiled path
def _axis_plan(length, kernel_size, tile, device):
    """How one axis of ``length`` (>= K) is cut into query tiles and their key halos.

    Returns:
        halo (LongTensor): (n, S) key positions of each tile's halo, S = min(T + K - 1, L);
            the halo of a tile holds the windows of all its queries.
        classes (LongTensor): (n,) the class of each tile: tiles of one class see the same
            pattern of bias indices.
        rel (LongTensor): (n_classes, T, S) per class, ``key - query + K - 1`` where the key
            is inside the query's window, ``2K - 1`` (a -inf entry) where it is not. Padding
            queries past the end (the last tile may overhang) use the last query's window.
    """
    K, T = kernel_size, tile
    n = -(-length // T)
    S = min(T + K - 1, length)
    t0 = torch.arange(n, device=device) * T
    start = (t0 - K // 2).clamp(0, length - S)
    halo = start[:, None] + torch.arange(S, device=device)  # (n, S)
    query = (t0[:, None] + torch.arange(T, device=device)).clamp(max=length - 1)  # (n, T)
    s = window_starts(length, K, device)[query]  # (n, T)
    key = halo[:, None, :]
    inside = (key >= s[..., None]) & (key < s[..., None] + K)
    rel = torch.where(inside, key - query[..., None] + K - 1, 2 * K - 1)  # (n, T, S)
    rel, classes = torch.unique(rel.flatten(1), dim=0, return_inverse=True)
    return halo, classes, rel.reshape(-1, T, S)


def tile_bias(rpb, rel_y, rel_x):
    """The bias of every class pair of tiles: (Cy, Cx, M, Ty*Tx, Sy*Sx), -inf off-window.

    ``rel_y`` (Cy, Ty, Sy) and ``rel_x`` (Cx, Tx, Sx) index the table padded with a -inf row
    and column (index 2K - 1).
    """
    M = rpb.shape[0]
    table = F.pad(rpb, (0, 1, 0, 1), value=float('-inf'))  # (M, 2K, 2K)
    Cy, Ty, Sy = rel_y.shape
    Cx, Tx, Sx = rel_x.shape
    iy = rel_y[:, None, :, None, :, None]  # (Cy, 1, Ty, 1, Sy, 1)
    ix = rel_x[None, :, None, :, None, :]  # (1, Cx, 1, Tx, 1, Sx)
    bias = table[:, iy, ix]  # (M, Cy, Cx, Ty, Tx, Sy, Sx)
    return bias.reshape(M, Cy, Cx, Ty * Tx, Sy * Sx).permute(1, 2, 0, 3, 4)


def _tiles(t, tile):
    """(B, M, R, Wq, d) map rows -> (B, nt, nTx, M, Ty*Tx, d) tiles (a copy)."""
    B, M, R, Wq, d = t.shape
    Ty, Tx = tile
    t = t.reshape(B, M, R // Ty, Ty, Wq // Tx, Tx, d).permute(0, 2, 4, 1, 3, 5, 6)
    return t.reshape(B, R // Ty, Wq // Tx, M, Ty * Tx, d)


def _untile(t, tile):
    """Inverse of :func:`_tiles`: (B, nt, nTx, M, Ty*Tx, d) -> (B, M, nt*Ty, nTx*Tx, d)."""
    B, nt, nx, M, _, d = t.shape
    Ty, Tx = tile
    t = t.reshape(B, nt, nx, M, Ty, Tx, d).permute(0, 3, 1, 4, 2, 5, 6)
    return t.reshape(B, M, nt * Ty, nx * Tx, d)


def _halos(rows_of_k, halo_x, Sy):
    """Keys of a chunk's halos: (B, M, nt*Sy, W, d) halo rows -> (B, nt, nTx, M, Sy*Sx, d)."""
    B, M, R, W, d = rows_of_k.shape
    nx, Sx = halo_x.shape
    t = rows_of_k.index_select(3, halo_x.flatten())  # (B, M, nt*Sy, nTx*Sx, d)
    t = t.reshape(B, M, R // Sy, Sy, nx, Sx, d).permute(0, 2, 4, 1, 3, 5, 6)
    return t.reshape(B, R // Sy, nx, M, Sy * Sx, d)


def _attend_tiles(q_t, k_t, v_t, bias, fused):
    """Attention of a chunk of tiles: q (B, nt, nx, M, L, d), k, v (B, nt, nx, M, S, d),
    bias (nt, nx, M, L, S) -> (B, nt, nx, M, L, d)."""
    B, nt, nx, M, L, d = q_t.shape
    S = k_t.shape[-2]
    if fused:  # one fused kernel, the logits never stored (q is already scaled)
        z = F.scaled_dot_product_attention(
            q_t.reshape(B, nt * nx * M, L, d), k_t.reshape(B, nt * nx * M, S, d),
            v_t.reshape(B, nt * nx * M, S, d), attn_mask=bias.reshape(1, nt * nx * M, L, S),
            scale=1.0)
        return z.reshape(B, nt, nx, M, L, d)
    logits = torch.matmul(q_t, k_t.transpose(-1, -2))
    logits = logits + bias
    attn = logits.to(sampling_dtype(logits.dtype)).softmax(dim=-1).to(v_t.dtype)
    return torch.matmul(attn, v_t)


class _TiledAttention(torch.autograd.Function):
    """Neighbourhood attention over tiles, chunk by chunk of tile rows, keeping nothing of a
    chunk for the backward pass (which recomputes it)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, plan, tile, rows_per_chunk):
        halo_y, cls_y, halo_x, cls_x = plan
        ctx.save_for_backward(q, k, v, bias)
        ctx.plan, ctx.tile, ctx.rows_per_chunk = plan, tile, rows_per_chunk
        ctx.device_type = q.device.type
        ctx.autocast = (torch.is_autocast_enabled(ctx.device_type),
                        torch.get_autocast_dtype(ctx.device_type))
        Ty = tile[0]
        fused = (q.dtype in (torch.float32, torch.float64)
                 and not torch.is_autocast_enabled(ctx.device_type))
        out = torch.empty_like(q)
        for a in range(0, halo_y.shape[0], rows_per_chunk):
            b = min(a + rows_per_chunk, halo_y.shape[0])
            q_t = _tiles(q[:, :, a * Ty:b * Ty], tile)
            k_rows = k.index_select(2, halo_y[a:b].flatten())
            v_rows = v.index_select(2, halo_y[a:b].flatten())
            chunk_bias = bias[cls_y[a:b]][:, cls_x]
            z = _attend_tiles(q_t, _halos(k_rows, halo_x, halo_y.shape[1]),
                              _halos(v_rows, halo_x, halo_y.shape[1]), chunk_bias.to(q.dtype),
                              fused)
            out[:, :, a * Ty:b * Ty] = _untile(z, tile)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, bias = ctx.saved_tensors
        halo_y, cls_y, halo_x, cls_x = ctx.plan
        tile, Ty, Sy = ctx.tile, ctx.tile[0], halo_y.shape[1]
        needs = ctx.needs_input_grad[:4]
        grad_q = torch.empty_like(q) if needs[0] else None
        grad_k = torch.zeros_like(k) if needs[1] else None
        grad_v = torch.zeros_like(v) if needs[2] else None
        grad_bias = torch.zeros_like(bias) if needs[3] else None
        enabled, dtype = ctx.autocast
        for a in range(0, halo_y.shape[0], ctx.rows_per_chunk):
            b = min(a + ctx.rows_per_chunk, halo_y.shape[0])
            rows = halo_y[a:b].flatten()
            leaves = [_tiles(q[:, :, a * Ty:b * Ty], tile), k.index_select(2, rows),
                      v.index_select(2, rows), bias[cls_y[a:b]]]
            leaves = [t.detach().requires_grad_(need) for t, need in zip(leaves, needs)]
            with torch.enable_grad(), torch.autocast(ctx.device_type, dtype, enabled):
                z = _attend_tiles(leaves[0], _halos(leaves[1], halo_x, Sy),
                                  _halos(leaves[2], halo_x, Sy),
                                  leaves[3][:, cls_x].to(leaves[0].dtype), fused=False)
            wanted = [t for t, need in zip(leaves, needs) if need]
            grads = iter(torch.autograd.grad(z, wanted, _tiles(grad_out[:, :, a * Ty:b * Ty], tile)))
            if needs[0]:
                grad_q[:, :, a * Ty:b * Ty] = _untile(next(grads), tile)
            if needs[1]:
                grad_k.index_add_(2, rows, next(grads))
            if needs[2]:
                grad_v.index_add_(2, rows, next(grads))
            if needs[3]:
                grad_bias.index_add_(0, cls_y[a:b], next(grads))
        return grad_q, grad_k, grad_v, grad_bias, None, None, None


def tiled_neighborhood_attention(q, k, v, rpb, tile=(7, 7), max_chunk_elements=2**22):
    """Same arguments and result as :func:`neighborhood_attention`, without copying keys.

    ``tile`` (Ty, Tx) is the query tile; ``max_chunk_elements`` bounds one chunk's logits
    (B * tiles * M * Ty*Tx * halo), the memory of the recomputation in the backward pass.
    """
    B, M, H, W, d = q.shape
    K = (rpb.shape[-1] + 1) // 2
    Ty, Tx = min(tile[0], H), min(tile[1], W)
    halo_y, cls_y, rel_y = _axis_plan(H, K, Ty, q.device)
    halo_x, cls_x, rel_x = _axis_plan(W, K, Tx, q.device)
    bias = tile_bias(rpb, rel_y, rel_x)  # (Cy, Cx, M, Ty*Tx, Sy*Sx)
    nTy, nTx = halo_y.shape[0], halo_x.shape[0]
    # padding queries past the bottom/right edge (their outputs are dropped)
    q = F.pad(q, (0, 0, 0, nTx * Tx - W, 0, nTy * Ty - H))
    per_row = B * nTx * M * Ty * Tx * halo_y.shape[1] * halo_x.shape[1]
    rows_per_chunk = max(1, max_chunk_elements // per_row)
    out = _TiledAttention.apply(q, k, v, bias, (halo_y, cls_y, halo_x, cls_x), (Ty, Tx),
                                rows_per_chunk)
    return out[:, :, :H, :W]


# ----------------------------------------------------------------------------- module
class NeighborhoodAttention(BaseModule):
    """Neighbourhood attention of DAT++'s N blocks, on (B, L, C) tokens of an (H, W) map.

    Parameters as natten 0.14's ``NeighborhoodAttention2D`` (the authors' checkpoints load
    after key conversion): ``qkv`` Linear(C, 3C) laid out (3, M, d), ``rpb`` (M, 2K-1, 2K-1),
    ``proj`` Linear(C, C).

    Args:
        embed_dims (int): C.
        num_heads (int): M.
        kernel_size (int): K, odd (7 in DAT++).

    Attributes:
        impl (str): ``'auto'`` (default): :func:`tiled_neighborhood_attention`, or the
            definition :func:`neighborhood_attention` under ``torch.jit`` tracing (FLOP
            counting, export: it counts exactly the K*K products per query);
            ``'reference'`` or ``'tiled'`` force one.
        tile (tuple[int]): the query tile of the tiled path.
        chunk_size (int): the tiled path's bound on one chunk's logits (elements).
    """

    impl = 'auto'
    tile = (7, 7)
    chunk_size = 2**22

    def __init__(self, embed_dims, num_heads, kernel_size=7, init_cfg=None):
        super().__init__(init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'NeighborhoodAttention: embed_dims ({embed_dims}) must be '
                             f'divisible by num_heads ({num_heads})')
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f'NeighborhoodAttention: kernel_size must be an odd int >= 1, '
                             f'got {kernel_size}')
        self.embed_dims, self.num_heads, self.kernel_size = embed_dims, num_heads, kernel_size
        self.scale = (embed_dims // num_heads)**-0.5
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        self.proj = nn.Linear(embed_dims, embed_dims)

    def init_weights(self):
        super().init_weights()
        trunc_normal_(self.rpb, std=0.02, a=-2., b=2.)

    def forward(self, x, hw_shape):
        """x: (B, L, C) tokens of an ``hw_shape`` map -> (B, L, C)."""
        if x.dim() != 3 or x.shape[2] != self.embed_dims:
            raise ValueError(f'NeighborhoodAttention: input x must be (B, L, {self.embed_dims})'
                             f' tokens, got shape {tuple(x.shape)}')
        B, L, C = x.shape
        H, W = hw_shape
        if H * W != L:
            raise ValueError(f'NeighborhoodAttention: hw_shape {tuple(hw_shape)} does not '
                             f'match the {L} tokens of input x')
        K, M = self.kernel_size, self.num_heads
        x = x.reshape(B, H, W, C)
        # maps smaller than the kernel: zeros at the right/bottom, before the projection
        Hp, Wp = max(H, K), max(W, K)
        if (Hp, Wp) != (H, W):
            x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
        qkv = self.qkv(x).reshape(B, Hp, Wp, 3, M, C // M).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]  # (B, M, Hp, Wp, d)
        z = self._attention_fn()(q, k, v, self.rpb)
        z = z[:, :, :H, :W].permute(0, 2, 3, 1, 4).reshape(B, L, C)
        return self.proj(z)

    def _attention_fn(self):
        impl = self.impl
        if impl == 'auto':
            impl = 'reference' if is_tracing() else 'tiled'
        if impl == 'reference':
            return neighborhood_attention
        if impl == 'tiled':
            return lambda q, k, v, rpb: tiled_neighborhood_attention(
                q, k, v, rpb, self.tile, self.chunk_size)
        raise ValueError(f"NeighborhoodAttention.impl must be 'auto', 'reference' or 'tiled', "
                         f'got {self.impl!r}')

    def extra_repr(self):
        return f'num_heads={self.num_heads}, kernel_size={self.kernel_size}'


__all__ = ['neighborhood_attention', 'tiled_neighborhood_attention', 'window_starts',
           'NeighborhoodAttention']
