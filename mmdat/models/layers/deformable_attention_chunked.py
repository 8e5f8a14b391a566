"""A memory-lean computation of :func:`deformable_attention` for large feature maps.

The straightforward path holds, per block, the (B*G, Nq, Nk, 2) displacements, the full
(B, M, Nq, Nk) bias, logits and attention at once (and autograd keeps them for the backward
pass): at stage 3 of a 1333x800 image that is several GiB per block. Here the queries are
processed in chunks of rows of the query grid; each chunk computes its own displacements and
bias and attends (the same functions as the reference path, so the numerics are identical),
under activation checkpointing when gradients are needed, so at most one chunk's
(B, M, rows*W, Nk) tensors are alive at a time.
"""
import torch
import torch.utils.checkpoint as cp

from .deformable_attention import deformable_position_bias, deformed_keys_values, grid_points


def _attend_rows(q_rows, k, v, points, rpe_table, attn_bias, query_points, num_heads):
    """Eq. 9 for one chunk of query rows: q_rows (B, C, R, W) -> (B, C, R, W)."""
    B, C, R, W = q_rows.shape
    M, d, Nk = num_heads, C // num_heads, k.shape[-1]
    q = q_rows.reshape(B * M, d, R * W)
    logits = torch.einsum('bcm,bcn->bmn', q, k.reshape(B * M, d, Nk)) * d**-0.5
    if rpe_table is not None:
        bias = deformable_position_bias(rpe_table, query_points,
                                        points.reshape(B, points.shape[1], Nk, 2))
        logits = logits + bias.reshape(B * M, R * W, Nk)
    if attn_bias is not None:
        logits = (logits.reshape(B, M, R * W, Nk) + attn_bias).reshape(B * M, R * W, Nk)
    attn = logits.softmax(dim=-1)
    z = torch.einsum('bmn,bcn->bcm', attn, v.reshape(B * M, d, Nk))
    return z.reshape(B, C, R, W)


def chunked_deformable_attention(q, x, points, w_k, b_k, w_v, b_v, num_heads, rpe_table=None,
                                 attn_bias=None, max_chunk_elements=2**22):
    """Same arguments and result as :func:`deformable_attention`, memory-lean.

    ``max_chunk_elements`` bounds the size of one chunk's (B, M, rows*W, Nk) logits.
    """
    B, C, H, W = q.shape
    Nk = points.shape[2] * points.shape[3]
    k, v = deformed_keys_values(x, points, w_k, b_k, w_v, b_v)
    query_points = grid_points(H, W, q.device, q.dtype)  # (H, W, 2)
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
                query_points[rows].reshape(-1, 2), num_heads)
        if checkpoint:
            outs.append(cp.checkpoint(_attend_rows, *args, use_reentrant=False))
        else:
            outs.append(_attend_rows(*args))
    return torch.cat(outs, dim=2)
