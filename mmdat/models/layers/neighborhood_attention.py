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
above: it gathers each query's K*K keys (K*K copies of the key map).
:func:`tiled_neighborhood_attention` computes the same without those copies: queries in tiles of
``Ty x Tx`` (at least K x K) attend to their tile's halo of ``(Ty + K - 1) x (Tx + K - 1)``
keys through one ``scaled_dot_product_attention``, the keys outside each query's window masked
by ``-inf`` in the bias. The tiles are regular (the grid is shifted by up to K // 2 so that the
clamped windows of the last tile still fit its halo), so the query tiles and the key halos are
strided views of the zero-padded maps (``Tensor.unfold``), copied once into the kernel's
layout, and the halos' gradients go back in four non-overlapping strided additions. The bias
of a tile depends on its position only at the borders: it is built once per *class* of tiles
(first, interior, last per axis) from the small table, and its gradient is reduced per class.
The forward pass keeps no chunk's tensors; the backward pass recomputes one chunk of tile rows
at a time with the explicit softmax formulas. At 7x7 tiles a query scores 169 keys instead of
49; measured against mmpretrain's ``WindowMSA`` in README "Performance".
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.autograd.function import once_differentiable

from .deformable_attention import check_tokens, is_tracing, sampling_dtype, size_max


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
@functools.lru_cache(maxsize=64)
def _axis_plan(length, kernel_size, tile, device):
    """How one axis of ``length`` (>= K) is cut into query tiles of ``tile`` (>= K) queries,
    each with a halo of ``tile + K - 1`` keys that holds the windows of all its queries.

    The tiles are regular: tile t covers queries ``t * T + o ..`` and its halo keys
    ``t * T + o - K // 2 ..``, for an offset ``o`` in ``[-K // 2, 0]`` chosen so that the last
    tile's clamped windows still fit (its last query must be at least K // 2 into the tile).
    So queries and halos are plain strided views of the zero-padded maps.

    Returns:
        dict: ``o``, ``n`` (tiles), ``q_pad`` and ``kv_pad`` ((before, after) zero padding of
        the query and key maps) and ``classes`` (n,), ``rel`` (n_classes, T, T + K - 1): per
        class of tiles, ``key - query + K - 1`` where the key is inside the query's window,
        ``2K - 1`` (a -inf entry) where it is not. Padding queries use the nearest query's
        window.
    """
    # computed once per size and device, on the CPU: no host-device synchronisation
    K, T, h = kernel_size, tile, kernel_size // 2
    o = next(o for o in range(0, -h - 1, -1) if (length - 1 - o) % T >= h)
    n = -(-(length - o) // T)
    S = T + K - 1
    q_pad = (-o, n * T + o - length)
    kv_pad = (h - o, n * T + K - 1 - (h - o) - length)
    t0 = torch.arange(n)[:, None] * T + o
    query = (t0 + torch.arange(T)).clamp(0, length - 1)  # (n, T)
    key = (t0 - h + torch.arange(S))[:, None, :]  # (n, 1, S)
    s = window_starts(length, K)[query][..., None]  # (n, T, 1)
    inside = (key >= s) & (key < s + K)
    rel = torch.where(inside, key - query[..., None] + K - 1, 2 * K - 1)  # (n, T, S)
    rel, classes = torch.unique(rel.flatten(1), dim=0, return_inverse=True)
    return dict(o=o, n=n, q_pad=q_pad, kv_pad=kv_pad, classes=classes.to(device),
                rel=rel.reshape(-1, T, S).to(device))


def tile_bias(rpb, rel_y, rel_x):
    """The bias of every class pair of tiles: (M, Cy, Cx, Ty*Tx, Sy*Sx), -inf off-window.

    ``rel_y`` (Cy, Ty, Sy) and ``rel_x`` (Cx, Tx, Sx) index the table padded with a -inf row
    and column (index 2K - 1).
    """
    M = rpb.shape[0]
    table = F.pad(rpb, (0, 1, 0, 1), value=float('-inf'))  # (M, 2K, 2K)
    Cy, Ty, Sy = rel_y.shape
    Cx, Tx, Sx = rel_x.shape
    iy = rel_y[:, None, :, None, :, None]  # (Cy, 1, Ty, 1, Sy, 1)
    ix = rel_x[None, :, None, :, None, :]  # (1, Cx, 1, Tx, 1, Sx)
    return table[:, iy, ix].reshape(M, Cy, Cx, Ty * Tx, Sy * Sx)


def _tiles(t, tile):
    """(B, nt*Ty, nx*Tx, M, d) padded rows -> (B, M * nt * nx, Ty*Tx, d) tiles (a copy)."""
    B, R, C, M, d = t.shape
    Ty, Tx = tile
    t = t.reshape(B, R // Ty, Ty, C // Tx, Tx, M, d).permute(0, 5, 1, 3, 2, 4, 6)
    return t.reshape(B, -1, Ty * Tx, d)


def _halos(t, tile, kernel_size):
    """(B, nt*Ty + K-1, nx*Tx + K-1, M, d) padded rows -> (B, M * nt * nx, Sy*Sx, d), the
    overlapping halos (one copy of a strided view)."""
    B, _, _, M, d = t.shape
    (Ty, Tx), K = tile, kernel_size
    t = t.unfold(1, Ty + K - 1, Ty).unfold(2, Tx + K - 1, Tx)  # (B, nt, nx, M, d, Sy, Sx)
    return t.permute(0, 3, 1, 2, 5, 6, 4).reshape(B, -1, (Ty + K - 1) * (Tx + K - 1), d)


def _add_halos(dst, halos, tile, kernel_size):
    """Add (B, M * nt * nx, Sy*Sx, d) halo gradients into the padded rows ``dst``
    (B, (nt+1)*Ty, (nx+1)*Tx, M, d) they came from (one tile more than the halos reach): the
    halos overlap, so they are added in parts that do not (their first Ty rows and the K-1
    after, likewise for columns)."""
    B, R, C, M, d = dst.shape
    (Ty, Tx), K = tile, kernel_size
    nt, nx = R // Ty - 1, C // Tx - 1
    halos = halos.reshape(B, M, nt, nx, Ty + K - 1, Tx + K - 1, d).permute(0, 2, 4, 3, 5, 1, 6)
    for ys, yl in ((0, Ty), (Ty, K - 1)):
        for xs, xl in ((0, Tx), (Tx, K - 1)):
            view = dst[:, ys:ys + nt * Ty, xs:xs + nx * Tx].reshape(B, nt, Ty, nx, Tx, M, d)
            view[:, :, :yl, :, :xl] += halos[:, :, ys:ys + yl, :, xs:xs + xl]


def _untile(z, out, tile):
    """Write (B, M * nt * nx, Ty*Tx, d) tiles into the padded rows ``out`` (B, nt*Ty, nx*Tx,
    M, d)."""
    B, R, C, M, d = out.shape
    Ty, Tx = tile
    out.view(B, R // Ty, Ty, C // Tx, Tx, M, d).copy_(
        z.reshape(B, M, R // Ty, C // Tx, Ty, Tx, d).permute(0, 2, 4, 3, 5, 1, 6))


class _TiledAttention(torch.autograd.Function):
    """Neighbourhood attention of padded query rows ``q`` (B, Hq, Wq, M, d) over the padded key
    and value rows ``k``, ``v`` (B, Hq + K-1, Wq + K-1, M, d), tile row chunk by chunk; the
    backward pass recomputes each chunk and writes its gradients with the explicit softmax
    formulas (no tensor of a chunk is kept)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, classes, tile, kernel_size, rows_per_chunk):
        ctx.save_for_backward(q, k, v, bias)
        ctx.classes, ctx.tile, ctx.kernel_size = classes, tile, kernel_size
        ctx.rows_per_chunk = rows_per_chunk
        out = torch.empty_like(q)
        for rows, krows, mask in _TiledAttention.chunks(ctx, q, bias):
            z = F.scaled_dot_product_attention(
                _tiles(q[:, rows], tile), _halos(k[:, krows], tile, kernel_size),
                _halos(v[:, krows], tile, kernel_size), attn_mask=mask.to(q.dtype), scale=1.0)
            _untile(z, out[:, rows], tile)
        return out

    @staticmethod
    def chunks(ctx, q, bias):
        """(query rows, key rows, (1, M * nt * nx, L, S) bias) of each chunk of tile rows."""
        (cls_y, cls_x), (Ty, _), K = ctx.classes, ctx.tile, ctx.kernel_size
        M, L, S = bias.shape[0], bias.shape[3], bias.shape[4]
        for t0 in range(0, cls_y.shape[0], ctx.rows_per_chunk):
            t1 = min(t0 + ctx.rows_per_chunk, cls_y.shape[0])
            mask = bias[:, cls_y[t0:t1]][:, :, cls_x]  # (M, nt, nx, L, S)
            yield (slice(t0 * Ty, t1 * Ty), slice(t0 * Ty, t1 * Ty + K - 1),
                   mask.reshape(1, -1, L, S))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, bias = ctx.saved_tensors
        (cls_y, cls_x), tile, K = ctx.classes, ctx.tile, ctx.kernel_size
        B, M = q.shape[0], q.shape[3]
        (Ty, Tx), (Hq, Wq) = tile, q.shape[1:3]
        grad_q = torch.empty_like(q)
        # key gradients with a tile's room past the halos (see _add_halos)
        grad_k, grad_v = (k.new_zeros(B, Hq + Ty, Wq + Tx, M, q.shape[4]) for _ in range(2))
        grad_bias = torch.zeros_like(bias)
        dtype = sampling_dtype(q.dtype)
        t0 = 0
        for rows, krows, mask in _TiledAttention.chunks(ctx, q, bias):
            q_t = _tiles(q[:, rows], tile)
            k_t, v_t = _halos(k[:, krows], tile, K), _halos(v[:, krows], tile, K)
            go = _tiles(grad_out[:, rows], tile)
            logits = torch.matmul(q_t, k_t.transpose(-1, -2)).to(dtype)
            logits += mask
            p = logits.softmax(dim=-1)  # (B, M*n, L, S)
            del logits
            dp = torch.matmul(go, v_t.transpose(-1, -2)).to(dtype)
            # dS = P * (dP - sum(P * dP)) (the softmax's gradient), in place
            dp -= (p * dp).sum(-1, keepdim=True)
            ds = dp.mul_(p)
            p, ds = p.to(q.dtype), ds.to(q.dtype)
            _untile(torch.matmul(ds, k_t), grad_q[:, rows], tile)
            grows = slice(rows.start, rows.stop + Ty)
            _add_halos(grad_k[:, grows], torch.matmul(ds.transpose(-1, -2), q_t), tile, K)
            _add_halos(grad_v[:, grows], torch.matmul(p.transpose(-1, -2), go), tile, K)
            # the bias: summed over the batch and over the tiles of each class
            nt = rows.stop // tile[0] - t0
            g = ds.sum(0).reshape(M, nt, cls_x.shape[0], *ds.shape[2:])
            g = torch.zeros(M, nt, bias.shape[2], *ds.shape[2:], dtype=g.dtype,
                            device=g.device).index_add_(2, cls_x, g)
            grad_bias.index_add_(1, cls_y[t0:t0 + nt], g.to(bias.dtype))
            t0 += nt
        Hk, Wk = k.shape[1:3]
        return (grad_q, grad_k[:, :Hk, :Wk], grad_v[:, :Hk, :Wk], grad_bias, None, None, None,
                None)


def tiled_neighborhood_attention(q, k, v, rpb, tile=(7, 7), max_chunk_elements=2**22):
    """Same arguments and result as :func:`neighborhood_attention`, without copying keys
    per query.

    ``tile`` (Ty, Tx), each at least K, is the query tile; ``max_chunk_elements`` bounds one
    chunk's logits (B * tiles * M * Ty*Tx * halo), the memory of the backward pass.
    """
    B, M, H, W, d = q.shape
    K = (rpb.shape[-1] + 1) // 2
    if min(tile) < K:
        raise ValueError(f'tiled_neighborhood_attention: tiles {tuple(tile)} must be at least '
                         f'the kernel size {K}')
    if H < K or W < K:
        raise ValueError(f'tiled_neighborhood_attention: a {H}x{W} map is smaller than the '
                         f'{K}x{K} neighbourhood: pad it first')
    py, px = (_axis_plan(n, K, t, q.device) for n, t in zip((H, W), tile))
    bias = tile_bias(rpb, py['rel'], px['rel'])  # (M, Cy, Cx, L, S)
    # tokens-last layout (B, H, W, M, d), zero-padded: queries to whole tiles, keys and values
    # to whole halos
    q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (q, k, v))
    q = F.pad(q, (0, 0, 0, 0, *px['q_pad'], *py['q_pad']))
    k = F.pad(k, (0, 0, 0, 0, *px['kv_pad'], *py['kv_pad']))
    v = F.pad(v, (0, 0, 0, 0, *px['kv_pad'], *py['kv_pad']))
    per_row = B * px['n'] * M * bias.shape[-2] * bias.shape[-1]
    out = _TiledAttention.apply(q, k, v, bias, (py['classes'], px['classes']), tuple(tile), K,
                                max(1, max_chunk_elements // per_row))
    (y0, _), (x0, _) = py['q_pad'], px['q_pad']
    return out[:, y0:y0 + H, x0:x0 + W].permute(0, 3, 1, 2, 4)


# ----------------------------------------------------------------------------- module
def pad_to_kernel(x, kernel_size):
    """(B, H, W, C) zero-padded at the right/bottom to at least K x K. With sizes traced for
    export (tensors or symbolic ints) the padding ``max(K - size, 0)`` is computed at run time,
    so one graph serves maps both smaller and larger than the kernel."""
    H, W = x.shape[1], x.shape[2]
    if not isinstance(H, int):
        return F.pad(x, (0, 0, 0, size_max(kernel_size - W, 0),
                         0, size_max(kernel_size - H, 0)))
    Hp, Wp = max(H, kernel_size), max(W, kernel_size)
    if (Hp, Wp) != (H, W):
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
    return x


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

    IMPLS = ('auto', 'reference', 'tiled')
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
        check_tokens(self, x, hw_shape)
        B, L, C = x.shape
        H, W = hw_shape
        K, M = self.kernel_size, self.num_heads
        # maps smaller than the kernel: zeros at the right/bottom, before the projection
        x = pad_to_kernel(x.reshape(B, H, W, C), K)
        Hp, Wp = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(B, Hp, Wp, 3, M, C // M).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, M, Hp, Wp, d) each
        q = q * self.scale
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
