"""A memory-lean and fast computation of :func:`deformable_attention` for large feature maps.

The straightforward path holds, per block, the (B*G, Nq, Nk, 2) displacements, the full
(B, M, Nq, Nk) bias, logits and attention at once (and autograd keeps them for the backward
pass): at stage 3 of a 1333x800 image that is several GiB per block. Here the queries are
processed in chunks (:class:`_ChunkedAttention`): the forward pass keeps no chunk's tensors,
the backward pass recomputes one chunk at a time and adds its gradients into buffers made
once, so at most one chunk's (B, M, n, Nk) tensors are alive at a time.

Per chunk, the bias is the reference path's :func:`deformable_position_bias` (one
``F.grid_sample`` of the table) for the chunk's queries. The forward pass feeds it as the mask
of one ``scaled_dot_product_attention``; the backward pass adds it in place onto
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


def _attend(q, k_t, v_t, points, rpe_table, attn_bias, query_points, num_heads, position_bias,
            fused=False):
    """Eq. 9 for one chunk of queries: q (B, C, n) at ``query_points`` -> (B, C, n).

    k_t and v_t are the keys and values, (B, M, Nk, d). ``query_points`` is the (n, 2) (y, x)
    of the chunk's queries, or for the separable bias the (ys, xs) of the whole rows it covers.
    ``fused``: when no gradient is needed, in float32 or float64 without autocast, the logits,
    softmax and weighted sum run as one ``scaled_dot_product_attention`` with the bias as its
    mask (same maths; about 1.6x faster on CPU, and the logits are never stored).
    """
    B, C, n = q.shape
    M, d, Nk = num_heads, C // num_heads, k_t.shape[2]
    bias = None
    if rpe_table is not None:
        key_points = points.reshape(B, points.shape[1], Nk, 2)
        if position_bias == 'separable':
            bias = separable_position_bias(rpe_table, *query_points, key_points)
        else:
            bias = deformable_position_bias(rpe_table, query_points, key_points)
    if attn_bias is not None:  # (1 or B, M, n, Nk)
        bias = attn_bias if bias is None else bias + attn_bias
    q = q.reshape(B, M, d, n).transpose(2, 3)
    full_precision = (q.dtype in (torch.float32, torch.float64)
                      and not torch.is_autocast_enabled(q.device.type))
    if full_precision and (bias is None or bias.dtype == q.dtype):
        if fused:
            z = F.scaled_dot_product_attention(q, k_t, v_t, attn_mask=bias)
            return z.transpose(2, 3).reshape(B, C, n)
        # q k^T / sqrt(d) + bias, the bias added in place: no logits-sized copy (matmul's
        # result is not an autograd view, and its backward does not need it)
        logits = torch.matmul(q * d**-0.5, k_t.transpose(2, 3))  # (B, M, n, Nk)
        if bias is not None:
            logits.add_(bias)
    else:  # as the reference path: a half-precision q k^T gets the bias added in >= float32
        logits = torch.matmul(q, k_t.transpose(2, 3)) * d**-0.5
        if bias is not None:
            logits = logits + bias
    attn = logits.to(sampling_dtype(logits.dtype)).softmax(dim=-1).to(v_t.dtype)
    # z^T = attn v^T, (B, M, n, d): the gradients of attn and v^T come back contiguous
    z = torch.matmul(attn, v_t)
    return z.transpose(2, 3).reshape(B, C, n)


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
    """
    if position_bias not in POSITION_BIAS:
        raise ValueError(f'chunked_deformable_attention: position_bias must be one of '
                         f'{POSITION_BIAS}, got {position_bias!r}')
    B, C, H, W = q.shape
    Nk = points.shape[2] * points.shape[3]
    k, v = deformed_keys_values(x, points, w_k, b_k, w_v, b_v)
    M, d = num_heads, C // num_heads
    k_t, v_t = (t.reshape(B, M, d, Nk).transpose(2, 3).contiguous() for t in (k, v))
    query_points = grid_points(H, W, q.device, sampling_dtype(points.dtype),
                               query_grid)  # (H, W, 2)
    per_chunk = max(1, max_chunk_elements // (B * num_heads * Nk))
    if position_bias == 'separable':  # whole rows
        per_chunk = W * max(1, per_chunk // W)
    q = q.flatten(2)
    chunks = []
    for start in range(0, H * W, per_chunk):
        chunk = slice(start, min(H * W, start + per_chunk))
        if position_bias == 'separable':
            rows = slice(chunk.start // W, chunk.stop // W)
            chunks.append((chunk, (query_points[rows, 0, 0], query_points[0, :, 1])))
        else:
            chunks.append((chunk, query_points.reshape(H * W, 2)[chunk]))
    z = _ChunkedAttention.apply(q, k_t, v_t, points, rpe_table, attn_bias, chunks, num_heads,
                                position_bias)
    return z.reshape(B, C, H, W)


class _ChunkedAttention(torch.autograd.Function):
    """Eq. 9 chunk by chunk of queries, keeping no chunk's tensors for the backward pass.

    The backward pass recomputes each chunk (as activation checkpointing would) and adds its
    gradients in place into buffers made once, before the loop. So the memory in use is that
    of the inputs plus one chunk, and every chunk finds the C allocator's heap as the last one
    left it: no per-chunk gradient of the whole query map to scatter, and no heap growth
    from chunk tensors interleaved with long-lived ones.
    """

    @staticmethod
    def forward(ctx, q, k_t, v_t, points, rpe_table, attn_bias, chunks, num_heads,
                position_bias):
        ctx.save_for_backward(q, k_t, v_t, points, rpe_table, attn_bias)
        ctx.chunks, ctx.num_heads, ctx.position_bias = chunks, num_heads, position_bias
        ctx.device_type = q.device.type
        ctx.autocast = (torch.is_autocast_enabled(ctx.device_type),
                        torch.get_autocast_dtype(ctx.device_type))
        z = None
        for chunk, query_points in chunks:
            z_chunk = _attend(q[:, :, chunk], k_t, v_t, points, rpe_table,
                              None if attn_bias is None else attn_bias[:, :, chunk],
                              query_points, num_heads, position_bias, fused=True)
            if z is None:
                z = z_chunk.new_empty(q.shape)
            z[:, :, chunk] = z_chunk
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z):
        inputs = ctx.saved_tensors  # q, k_t, v_t, points, rpe_table, attn_bias
        needed = [i for i, need in enumerate(ctx.needs_input_grad[:6]) if need]
        grads = [None] * 6
        for i in needed:  # q's gradient is written chunk by chunk, the others summed
            grads[i] = (torch.empty_like if i == 0 else torch.zeros_like)(inputs[i])
        enabled, dtype = ctx.autocast
        for chunk, query_points in ctx.chunks:
            chunk_inputs = [t[:, :, chunk] if i in (0, 5) and t is not None else t
                            for i, t in enumerate(inputs)]
            leaves = [t.detach().requires_grad_(i in needed) if t is not None else None
                      for i, t in enumerate(chunk_inputs)]
            with torch.enable_grad(), torch.autocast(ctx.device_type, dtype, enabled):
                z_chunk = _attend(*leaves, query_points, ctx.num_heads, ctx.position_bias)
            chunk_grads = torch.autograd.grad(z_chunk, [leaves[i] for i in needed],
                                              grad_z[:, :, chunk], allow_unused=True)
            for i, g in zip(needed, chunk_grads):
                if g is None:  # the points without a position bias: used for k, v only
                    continue
                if i == 0:
                    grads[0][:, :, chunk] = g
                elif i == 5:
                    grads[5][:, :, chunk] += g
                else:
                    grads[i] += g
        return (*grads, None, None, None)
