"""A memory-lean and fast computation of :func:`deformable_attention` for large feature maps.

The straightforward path holds, per block, the (B*G, Nq, Nk, 2) displacements, the full
(B, M, Nq, Nk) bias, logits and attention at once (and autograd keeps them for the backward
pass): at stage 3 of a 1333x800 image that is several GiB per block. Here the queries are
processed in chunks (:class:`_ChunkedAttention`): the forward pass keeps no chunk's tensors,
the backward pass recomputes one chunk at a time and adds its gradients into buffers made
once, so at most one chunk's (B, M, n, Nk) tensors are alive at a time.

Per chunk, the bias is the reference path's :func:`deformable_position_bias` (one
``F.grid_sample`` of the table) for the chunk's queries, split into S sub-chunks stacked along
``grid_sample``'s batch axis so that its CPU kernel, which parallelises over that axis only,
keeps every thread busy (:func:`_bias_splits`). The forward pass feeds each sub-chunk's bias as
the mask of one ``scaled_dot_product_attention``; the backward pass adds it in place onto
``q k^T / sqrt(d)`` and takes the softmax explicitly: the reference path's numerics up to float
rounding.

Chunks are sized for the C allocator as much as for the bound on memory: a tensor above
32 MiB is a fresh ``mmap`` every time, and its page faults cost more than the matrix products
(a 34 MB (24, 84, 4200) ``bmm`` takes 14 ms with a fresh output, 4 ms into a reused one); and
small gradients kept from chunk to chunk between the chunk tensors make glibc's heap grow
(with autograd's checkpointing per chunk, the resident peak was 2 GB for 0.4 GB in use).

:func:`separable_position_bias` is an alternative for the bias: the queries lie on a regular
grid, so the y part of a displacement depends only on (query row, key) and the x part only on
(query column, key), and bilinear interpolation separates into an interpolation along y (one
small tensor per query row) followed by one along x. It gives the same values and gradients,
but on CPU it is slower than ``grid_sample`` (a fused kernel) at DAT's sizes (gather + lerp
passes over a bias-sized tensor cost more than grid_sample's bilinear taps: 17 s instead of
7 s for the block of ``tools/benchmark.py --block deformable``), so the chunked path uses it
only when asked (``position_bias='separable'``).
"""
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .deformable_attention import (deformable_position_bias, deformed_keys_values, grid_points,
                                   sampling_dtype)


def _table_coords(query, key, size):
    """The two interpolation corners and the fraction of the displacement
    ``(query - key) / 2`` along one table axis of ``size`` entries (``align_corners=True``).

    Returns (lo, hi, frac): the corners ``floor(idx)`` and ``floor(idx) + 1`` as indices into
    the axis padded with one zero entry on both sides (so clamped to [0, size + 1]: a corner
    outside the table reads a zero, exactly as ``grid_sample``'s ``padding_mode='zeros'``),
    and ``idx - floor(idx)``. As in ``grid_sample``, the gradient flows through the fraction
    only (the floor is piecewise constant).
    """
    idx = ((query - key) * 0.5 + 1) * 0.5 * (size - 1)
    lo = idx.detach().floor()
    frac = idx - lo
    lo = lo.long()
    hi = (lo + 1).clamp_(-1, size) + 1  # padded index of the upper corner
    lo = lo.clamp_(-1, size) + 1  # of the lower corner
    return lo, hi, frac


def separable_position_bias(table, query_ys, query_xs, key_points):
    """The deformable relative position bias phi(B^; R) of Eq. 9 for a grid of queries.

    Equals ``deformable_position_bias(table, grid, key_points)`` with ``grid`` the (y, x)
    mesh of ``query_ys`` x ``query_xs``, for the value and the gradients w.r.t. ``table`` and
    ``key_points``, at O(rows * Nk * (2W0-1)) cost for the y interpolation instead of sampling
    every (query, key) pair.

    Args:
        table (Tensor): (M, Ty, Tx) bias table B^, one per head.
        query_ys (Tensor): (I,) normalised y of the query rows.
        query_xs (Tensor): (J,) normalised x of the query columns.
        key_points (Tensor): (B, G, Nk, 2) deformed key positions, normalised (y, x).

    Returns:
        Tensor: (B, M, I*J, Nk), heads of group g reading the displacements of group g, in
        the dtype of ``table`` (interpolated in at least float32).
    """
    B, G, Nk, _ = key_points.shape
    M, Ty, Tx = table.shape
    Mg, I, J = M // G, query_ys.shape[0], query_xs.shape[0]
    dtype = sampling_dtype(torch.promote_types(table.dtype, key_points.dtype))
    key_points = key_points.to(dtype)
    y_lo, y_hi, fy = _table_coords(query_ys.to(dtype)[:, None], key_points[:, :, None, :, 0],
                                   Ty)  # (B, G, I, Nk)
    x_lo, x_hi, fx = _table_coords(query_xs.to(dtype)[:, None], key_points[:, :, None, :, 1],
                                   Tx)  # (B, G, J, Nk)

    # 1) along y: rows of the zero-padded table of each group, (G*(Ty+2), Mg*(Tx+2))
    padded = F.pad(table.to(dtype), (1, 1, 1, 1)).reshape(G, Mg, Ty + 2, Tx + 2)
    rows = padded.transpose(1, 2).reshape(G * (Ty + 2), Mg * (Tx + 2))
    group = torch.arange(G, device=table.device).reshape(1, G, 1, 1) * (Ty + 2)
    lerp_y = torch.lerp(F.embedding(y_lo + group, rows), F.embedding(y_hi + group, rows),
                        fy[..., None])  # (B, G, I, Nk, Mg*(Tx+2))
    lerp_y = lerp_y.reshape(B, G, I, Nk, Mg, Tx + 2).permute(0, 1, 4, 2, 3, 5)
    lerp_y = lerp_y.reshape(B, G, Mg, I, Nk * (Tx + 2))

    # 2) along x: for each (query column j, key k), entries k*(Tx+2) + x of row (b, g, m, i)
    key_offset = torch.arange(Nk, device=table.device) * (Tx + 2)
    shape = (B, G, Mg, I, J * Nk)
    x_lo = (x_lo + key_offset).reshape(B, G, 1, 1, J * Nk).expand(shape)
    x_hi = (x_hi + key_offset).reshape(B, G, 1, 1, J * Nk).expand(shape)
    bias = torch.lerp(lerp_y.gather(-1, x_lo), lerp_y.gather(-1, x_hi),
                      fx.reshape(B, G, 1, 1, J * Nk))
    return bias.reshape(B, M, I * J, Nk).to(table.dtype)


POSITION_BIAS = ('grid_sample', 'separable')


def _bias_splits(maps, device):
    """How many query sub-chunks to sample the position bias of in one ``grid_sample`` call.

    On CPU ``grid_sample`` (forward and backward) parallelises over its ``maps = B*G`` inputs
    only, so 3 groups on 2 threads run at 2/3 of the speed and one map on one thread: S
    sub-chunks stacked make ``S*B*G`` maps, a multiple of the thread count (measured, DAT-T's
    stage 3 at 800x1280 on 2 threads: 5.9 -> 3.6 ms forward and 13.6 -> 10.3 ms backward per
    4.2 M biases). Elsewhere one call is spread over all the output already.
    """
    if device.type != 'cpu':
        return 1
    threads = torch.get_num_threads()
    return threads // math.gcd(maps, threads)


def _position_bias(points, rpe_table, query_points, position_bias, Nk):
    """The position bias of one chunk: (S, B, M, n, Nk) for its S sub-chunks of n queries
    (the last one padded), or None without a table.

    ``query_points`` is the (S, n, 2) (y, x) of the sub-chunks' queries, or for the separable
    bias the (ys, xs) of the whole rows of its one sub-chunk.
    """
    if rpe_table is None:
        return None
    key_points = points.reshape(points.shape[0], points.shape[1], Nk, 2)
    if position_bias == 'separable':
        return separable_position_bias(rpe_table, *query_points, key_points)[None]
    return deformable_position_bias(rpe_table, query_points, key_points)


def _sub_chunk_bias(pos_bias, attn_bias, s, chunk):
    """The additive bias of sub-chunk ``s`` (queries ``chunk``), (B or 1, M, n, Nk), or None:
    the position bias (a view) plus the chunk's slice of ``attn_bias``."""
    bias = None if pos_bias is None else pos_bias[s, :, :, :chunk.stop - chunk.start]
    if attn_bias is not None:  # (1 or B, M, N, Nk)
        bias = attn_bias[:, :, chunk] if bias is None else bias + attn_bias[:, :, chunk]
    return bias


def _full_precision(q):
    """float32/float64 without autocast: the fused kernel applies (and the bias is added in
    the logits' own precision)."""
    return (q.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled(q.device.type))


def _probabilities(q, k, bias):
    """softmax(q k^T / sqrt(d) + bias) of one chunk, in at least float32 (the reference path's
    precision: in half precision the logits are promoted before the bias is added)."""
    logits = torch.matmul(q, k.transpose(-1, -2))
    if _full_precision(q) and (bias is None or bias.dtype == logits.dtype):
        logits.mul_(q.shape[-1]**-0.5)  # in place: no logits-sized copies
        if bias is not None:
            logits.add_(bias)
    else:
        logits = logits * q.shape[-1]**-0.5
        if bias is not None:
            logits = logits + bias
    return logits.to(sampling_dtype(logits.dtype)).softmax(dim=-1)


def _attend(q, k, v, bias):
    """Eq. 9 for one chunk: softmax(q k^T / sqrt(d) + bias) v, q (B, M, n, d) -> (B, M, n, d).

    In float32/float64 without autocast, one ``scaled_dot_product_attention`` with the bias as
    its mask (same maths, the logits never stored); it takes the fast fused kernel when the
    last dimensions of q, k and v are contiguous, which the callers ensure.
    """
    if _full_precision(q) and (bias is None or bias.dtype == q.dtype):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return torch.matmul(_probabilities(q, k, bias).to(v.dtype), v)


def _softmax_grad(p, dp):
    """dS = P * (dP - rowsum(dP * P)), the gradient of the logits of the softmax P from that
    of P, in place of ``dp``; in P's precision (the row sum is not autocast)."""
    with torch.autocast(p.device.type, enabled=False):
        return dp.sub_(torch.linalg.vecdot(dp, p).unsqueeze(-1)).mul_(p)


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def chunked_deformable_attention(q, x, points, w_k, b_k, w_v, b_v, num_heads, rpe_table=None,
                                 attn_bias=None, query_grid='centers', max_chunk_elements=2**22,
                                 position_bias='grid_sample'):
    """Same arguments and result as :func:`deformable_attention`, memory-lean.

    ``max_chunk_elements`` bounds the size of one chunk's (B, M, n, Nk) logits (at least one
    query per chunk; whole query rows with the separable bias); the default, 16 MiB of
    float32, keeps chunk tensors below the C allocator's 32 MiB ``mmap`` threshold.
    ``position_bias`` picks how the deformable bias is interpolated: ``'grid_sample'`` (the
    default, fastest on CPU) or ``'separable'`` (:func:`separable_position_bias`); both give
    the same values and gradients.

    The result is a (B, C, H, W) view of channels-last memory, the layout of the tokens:
    ``z.flatten(2).transpose(1, 2)`` is contiguous.
    """
    if position_bias not in POSITION_BIAS:
        raise ValueError(f'chunked_deformable_attention: position_bias must be one of '
                         f'{POSITION_BIAS}, got {position_bias!r}')
    B, C, H, W = q.shape
    Nk = points.shape[2] * points.shape[3]
    k, v = deformed_keys_values(x, points, w_k, b_k, w_v, b_v)
    M, d = num_heads, C // num_heads
    # (B, M, N, d) heads with contiguous channels: a view when q is a (B, C, H, W) view of
    # (B, H*W, C) tokens, as DeformableAttention passes it
    q = _last_dim_contiguous(q.reshape(B, M, d, H * W).transpose(2, 3))
    k, v = (t.reshape(B, M, d, Nk).transpose(2, 3).contiguous() for t in (k, v))
    query_points = grid_points(H, W, q.device, sampling_dtype(points.dtype),
                               query_grid)  # (H, W, 2)
    per_chunk = max(1, max_chunk_elements // (B * num_heads * Nk))
    chunks = []  # (the slices of the queries of its sub-chunks, their positions for the bias)
    if position_bias == 'separable':  # one sub-chunk of whole rows
        per_chunk = W * max(1, per_chunk // W)
        for start in range(0, H * W, per_chunk):
            rows = slice(start // W, min(H * W, start + per_chunk) // W)
            chunks.append(([slice(start, min(H * W, start + per_chunk))],
                           (query_points[rows, 0, 0], query_points[0, :, 1])))
    else:
        S = 1 if rpe_table is None else _bias_splits(B * points.shape[1], q.device)
        n = -(-per_chunk // S)  # per sub-chunk: the chunk's bound holds for its S
        query_points = query_points.reshape(H * W, 2)
        for start in range(0, H * W, S * n):
            points_c = query_points[start:start + S * n]
            if len(points_c) < S * n:  # the last chunk: padded with its last query
                points_c = torch.cat([points_c, points_c[-1:].expand(S * n - len(points_c), 2)])
            chunks.append(([slice(i, min(H * W, i + n))
                            for i in range(start, min(H * W, start + S * n), n)],
                           points_c.reshape(S, n, 2)))
    z = _ChunkedAttention.apply(q, k, v, points, rpe_table, attn_bias, chunks,
                                position_bias)  # (B, N, M, d)
    return z.reshape(B, H, W, C).permute(0, 3, 1, 2)


class _ChunkedAttention(torch.autograd.Function):
    """Eq. 9 chunk by chunk of queries, keeping no chunk's tensors for the backward pass.

    Inputs q (B, M, N, d), k and v (B, M, Nk, d); output z (B, N, M, d), the tokens' layout.
    The backward pass recomputes each chunk's attention probabilities ``P`` (one product and
    the bias) and applies the gradient formulas of softmax attention:

        dV += P^T dZ,   dP = dZ V^T,   dS = P * (dP - rowsum(dP * P)),
        dQ = dS K / sqrt(d),   dK += dS^T Q / sqrt(d),   d(bias) = dS,

    the bias's gradient going to the table and the points through the bias function's own
    backward. Gradients are written in place into buffers made once, so the memory in use is
    that of the inputs plus one chunk.
    """

    @staticmethod
    def forward(ctx, q, k, v, points, rpe_table, attn_bias, chunks, position_bias):
        Nk = k.shape[2]
        z = None
        for slices, query_points in chunks:
            pos_bias = _position_bias(points, rpe_table, query_points, position_bias, Nk)
            for s, chunk in enumerate(slices):
                z_chunk = _attend(q[:, :, chunk], k, v,
                                  _sub_chunk_bias(pos_bias, attn_bias, s, chunk))
                if z is None:
                    B, M, N, d = q.shape
                    z = z_chunk.new_empty(B, N, M, d)
                z[:, chunk] = z_chunk.transpose(1, 2)
        ctx.save_for_backward(q, k, v, points, rpe_table, attn_bias)
        ctx.chunks, ctx.position_bias = chunks, position_bias
        ctx.device_type = q.device.type
        ctx.autocast = (torch.is_autocast_enabled(ctx.device_type),
                        torch.get_autocast_dtype(ctx.device_type))
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z):
        q, k, v, points, rpe_table, attn_bias = ctx.saved_tensors
        need_q, need_k, need_v, need_points, need_table, need_bias = ctx.needs_input_grad[:6]
        scale = q.shape[-1]**-0.5
        acc = sampling_dtype(k.dtype)  # k and v gradients are sums over the chunks
        B, M, N, d = q.shape
        dq = q.new_empty(B, N, M, d).transpose(1, 2) if need_q else None  # the tokens' layout
        dk = torch.zeros(k.shape, dtype=acc, device=k.device) if need_k else None
        dv = torch.zeros(v.shape, dtype=acc, device=v.device) if need_v else None
        d_bias = torch.zeros_like(attn_bias) if need_bias else None
        # the position bias's inputs, whose gradients its own backward gives (grid_sample's);
        # without a table the points are not used here (only for the keys and values)
        leaves = [None if rpe_table is None else t.detach().requires_grad_(need)
                  for t, need in ((points, need_points), (rpe_table, need_table))]
        wrt = [t for t in leaves if t is not None and t.requires_grad]
        wrt_grads = [torch.zeros_like(t) for t in wrt]
        enabled, dtype = ctx.autocast
        for slices, query_points in ctx.chunks:
            with torch.enable_grad():  # the position bias, as a graph back to its inputs
                pos_bias = _position_bias(*leaves, query_points, ctx.position_bias, k.shape[2])
            bias_values = None if pos_bias is None else pos_bias.detach()
            # its gradient, the sub-chunks' dS (zero on the padding)
            d_pos = None
            if wrt:
                padded = slices[-1].stop - slices[-1].start < pos_bias.shape[-2]
                d_pos = (torch.zeros_like if padded or len(slices) < len(pos_bias)
                         else torch.empty_like)(pos_bias)
            for s, chunk in enumerate(slices):
                q_c = q[:, :, chunk]
                dz = grad_z[:, chunk].transpose(1, 2)  # (B, M, n, d)
                bias = _sub_chunk_bias(bias_values, attn_bias, s, chunk)
                with torch.no_grad(), torch.autocast(ctx.device_type, dtype, enabled):
                    p = _probabilities(q_c, k, bias)
                    if need_v:
                        dv += torch.matmul(p.to(v.dtype).transpose(-1, -2), dz)
                    # dS straight into the position bias's gradient where it can be
                    out = None
                    if d_pos is not None and _full_precision(dz) and d_pos.dtype == dz.dtype:
                        out = d_pos[s, :, :, :chunk.stop - chunk.start]
                        out = out if out.is_contiguous() else None
                    dp = torch.matmul(dz, v.transpose(-1, -2), out=out)
                    ds = _softmax_grad(p, dp.to(p.dtype))
                    del p
                    ds_k = ds.to(k.dtype)
                    if need_q:
                        dq[:, :, chunk] = torch.matmul(ds_k, k).mul_(scale)
                    if need_k:
                        dk += torch.matmul(ds_k.transpose(-1, -2), q_c).mul_(scale)
                    if need_bias:
                        d_bias[:, :, chunk] += ds.sum_to_size(d_bias[:, :, chunk].shape)
                if d_pos is not None and out is None:
                    d_pos[s, :, :, :chunk.stop - chunk.start] = ds
            if wrt:
                for g, new in zip(wrt_grads, torch.autograd.grad(pos_bias, wrt, d_pos,
                                                                 allow_unused=True)):
                    if new is not None:
                        g += new
        wrt_grads = iter(wrt_grads)
        d_points, d_table = (next(wrt_grads) if t is not None and t.requires_grad else None
                             for t in leaves)
        return (dq, None if dk is None else dk.to(k.dtype), None if dv is None else dv.to(v.dtype),
                d_points, d_table, d_bias, None, None)
