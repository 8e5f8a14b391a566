"""A memory-lean and fast computation of :func:`deformable_attention` for large feature maps.

The straightforward path holds, per block, the (B*G, Nq, Nk, 2) displacements, the full
(B, M, Nq, Nk) bias, logits and attention at once (and autograd keeps them for the backward
pass): at stage 3 of a 1333x800 image that is several GiB per block. Here the queries are
processed in chunks of rows of the query grid, under activation checkpointing when gradients
are needed, so at most one chunk's (B, M, rows*W, Nk) tensors are alive at a time.

Per chunk, the bias is the reference path's :func:`deformable_position_bias` (one
``F.grid_sample`` of the table) for the chunk's queries, and the logits are one ``baddbmm``
onto it (no separate scale and add passes over the (B*M, rows*W, Nk) logits): the reference
path's numerics up to float rounding.

:func:`separable_position_bias` is an alternative for the bias: the queries lie on a regular
grid, so the y part of a displacement depends only on (query row, key) and the x part only on
(query column, key), and bilinear interpolation separates into an interpolation along y (one
small tensor per query row) followed by one along x. It gives the same values and gradients,
but on CPU it is slower than ``grid_sample`` (a fused kernel) at DAT's sizes (gather + lerp
passes over a bias-sized tensor cost more than grid_sample's bilinear taps), so the chunked
path uses it only when asked (``position_bias='separable'``).
"""
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp

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


def _attend_rows(q_rows, k, v, points, rpe_table, attn_bias, query_ys, query_xs, num_heads,
                 position_bias):
    """Eq. 9 for one chunk of query rows: q_rows (B, C, R, W) -> (B, C, R, W)."""
    B, C, R, W = q_rows.shape
    M, d, Nk = num_heads, C // num_heads, k.shape[-1]
    bias = None
    if rpe_table is not None:
        key_points = points.reshape(B, points.shape[1], Nk, 2)
        if position_bias == 'separable':
            bias = separable_position_bias(rpe_table, query_ys, query_xs, key_points)
        else:
            query_points = torch.stack(torch.meshgrid(query_ys, query_xs, indexing='ij'), -1)
            bias = deformable_position_bias(rpe_table, query_points.reshape(R * W, 2),
                                            key_points)
    if attn_bias is not None:  # (1 or B, M, R*W, Nk)
        bias = attn_bias if bias is None else bias + attn_bias
    q = q_rows.reshape(B * M, d, R * W).transpose(1, 2)
    k = k.reshape(B * M, d, Nk)
    if bias is not None:
        bias = bias.expand(B, M, R * W, Nk).reshape(B * M, R * W, Nk)
    if (bias is not None and bias.dtype == q.dtype
            and not torch.is_autocast_enabled(q.device.type)):
        # bias + q k^T / sqrt(d) in one pass over the logits
        logits = torch.baddbmm(bias, q, k, alpha=d**-0.5)
    else:  # as the reference path: a half-precision q k^T gets the bias added in >= float32
        logits = torch.bmm(q, k) * d**-0.5
        if bias is not None:
            logits = logits + bias
    attn = logits.to(sampling_dtype(logits.dtype)).softmax(dim=-1).to(v.dtype)
    z = torch.bmm(v.reshape(B * M, d, Nk), attn.transpose(1, 2))  # (B*M, d, R*W)
    return z.reshape(B, C, R, W)


def chunked_deformable_attention(q, x, points, w_k, b_k, w_v, b_v, num_heads, rpe_table=None,
                                 attn_bias=None, max_chunk_elements=2**22,
                                 position_bias='grid_sample'):
    """Same arguments and result as :func:`deformable_attention`, memory-lean.

    ``max_chunk_elements`` bounds the size of one chunk's (B, M, rows*W, Nk) logits.
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
    query_points = grid_points(H, W, q.device, sampling_dtype(points.dtype))  # (H, W, 2)
    query_ys, query_xs = query_points[:, 0, 0], query_points[0, :, 1]
    if attn_bias is not None:  # (1 or B, M, H*W, Nk): chunked by query rows below
        attn_bias = attn_bias.reshape(*attn_bias.shape[:2], H, W, Nk)
    rows_per_chunk = max(1, max_chunk_elements // (B * num_heads * W * Nk))
    checkpoint = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, x, points, w_k, rpe_table, attn_bias))
    outs = []
    for start in range(0, H, rows_per_chunk):
        rows = slice(start, min(H, start + rows_per_chunk))
        args = (q[:, :, rows], k, v, points, rpe_table,
                None if attn_bias is None else attn_bias[:, :, rows].flatten(2, 3),
                query_ys[rows], query_xs, num_heads, position_bias)
        if checkpoint:
            outs.append(cp.checkpoint(_attend_rows, *args, use_reentrant=False))
        else:
            outs.append(_attend_rows(*args))
    return torch.cat(outs, dim=2)
