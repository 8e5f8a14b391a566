"""Deformable multi-head attention (DAT, Xia et al., CVPR 2022, Sec. 3.2).

The maths lives in :func:`deformable_attention`, a pure function that follows Eqs. 6-9 line
by line; :class:`DeformableAttention` holds the parameters, computes the deformed points with
the offset network, and calls it.

Conventions (those of the authors' released ImageNet models, see the README):

* points are normalised to ``[-1, 1]`` and stored in ``(y, x)`` order; a grid of ``n`` cells
  has its points at ``((i + 0.5) / n) * 2 - 1`` (:data:`GRIDS` names the conventions of
  DAT++, which :class:`DeformableAttention` takes as options);
* features and the position-bias table are sampled bilinearly with ``align_corners=True`` and
  zero padding;
* points, offsets, position biases and the softmax are computed in at least float32 (see
  :func:`sampling_dtype`), also under ``torch.autocast`` or in a half-precision model: in
  bfloat16 a point of a 56-cell grid would be off by up to a quarter of a cell;
* the relative displacement of a (query, key) pair is ``(q_pos - k_pos) / 2``, which lies in
  ``[-1, 1]`` when both points lie in the feature map, and indexes the bias table
  ``B^ in R^{M x (2H0-1) x (2W0-1)}`` in normalised coordinates, so one table serves any input
  size.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_

POS_ENCODINGS = ('relative', 'none', 'fixed', 'dwconv')

#: How the ``n`` points of a grid axis are placed, in normalised coordinates (i = 0..n-1):
#:
#: * ``'centers'``: ``(i + 0.5) / n * 2 - 1``, the pixel centres (DAT: keys and queries);
#: * ``'corners'``: ``i / (n - 1) * 2 - 1``, from -1 to 1 (DAT++: the queries of the position
#:   bias); a 1-point axis is placed at 0 (the authors' code divides 0 by 0);
#: * ``'shifted'``: ``(i + 0.5) / (n - 1) * 2 - 1`` (DAT++: the key reference points, as the
#:   authors' code computes them: half a cell shifted but normalised by n - 1, so the last point
#:   lies past 1, e.g. 1.167 for n = 7; a 1-point axis gives +inf). DAT++ clamps the deformed
#:   points to [-1, 1], so such points sample the last row/column.
GRIDS = ('centers', 'corners', 'shifted')


def sampling_dtype(dtype):
    """The precision of sampling points, biases and softmax: ``dtype``, at least float32."""
    return torch.promote_types(dtype, torch.float32)


def grid_axis(n, convention='centers', device=None, dtype=None):
    """The ``n`` normalised coordinates of one grid axis, placed by ``convention`` (GRIDS)."""
    i = torch.arange(n, device=device, dtype=dtype)
    if convention == 'centers':
        return (i + 0.5) / n * 2 - 1
    if convention == 'shifted':
        return (i + 0.5) / (n - 1) * 2 - 1
    if convention == 'corners':
        return i / (n - 1) * 2 - 1 if n > 1 else torch.zeros_like(i)
    raise ValueError(f'grid convention must be one of {GRIDS}, got {convention!r}')


def grid_points(height, width, device=None, dtype=None, convention='centers'):
    """Uniform reference points ``p`` of an ``height x width`` grid, shape (H, W, 2), (y, x)."""
    ys = grid_axis(height, convention, device, dtype)
    xs = grid_axis(width, convention, device, dtype)
    return torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1)


def sample(z, points, xy=False):
    """Bilinear sampling phi(z; p) of Eq. 8.

    Args:
        z (Tensor): (N, C, H, W) maps to sample from.
        points (Tensor): (N, ..., 2) normalised (y, x) points, 1 or 2 leading spatial dims.
        xy (bool): the points are already in grid_sample's (x, y) order.

    Returns:
        Tensor: (N, C, *points.shape[1:-1]), in the wider dtype of ``z`` and ``points``.
    """
    squeeze = points.dim() == 3
    dtype = torch.promote_types(z.dtype, points.dtype)  # grid_sample needs one dtype
    grid = (points if xy else points.flip(-1)).to(dtype)  # grid_sample wants (x, y)
    if squeeze:
        grid = grid.unsqueeze(1)
    out = F.grid_sample(z.to(dtype), grid, mode='bilinear', padding_mode='zeros',
                        align_corners=True)
    return out.squeeze(2) if squeeze else out


def displacement_planes(q_planes, k_planes):
    """``q_planes[:, :, None, None, :, None] + k_planes[:, None, :, :, None, :]``: the
    (2, S, B, G, Nq, Nk) coordinate planes of the displacements from (2, S, Nq) query and
    (2, B, G, Nk) (negated) key coordinates.

    With a gradient, through :class:`_DisplacementPlanes`: the same sum, whose backward
    reduces the incoming gradient in ``grid_sample``'s memory order.
    """
    if k_planes.requires_grad and torch.is_grad_enabled() and not is_tracing():
        return _DisplacementPlanes.apply(q_planes, k_planes)
    return _DisplacementPlanes.forward(None, q_planes, k_planes)


class _DisplacementPlanes(torch.autograd.Function):
    """The broadcast sum of :func:`displacement_planes`, its gradients the sums over the
    broadcast axes. They are taken in the (S, B, G, Nq, Nk, 2) order in which
    ``grid_sample``'s backward writes them (autograd's own backward of the sum reduces the
    permuted (2, ...) view: 10x slower, 1.6 ms instead of 0.16 ms for DAT-T++'s 2x1048x1000
    stage-1 sub-chunks)."""

    @staticmethod
    def forward(ctx, q_planes, k_planes):
        return q_planes[:, :, None, None, :, None] + k_planes[:, None, :, :, None, :]

    @staticmethod
    def backward(ctx, grad):
        grad = grad.permute(1, 2, 3, 4, 5, 0)  # (S, B, G, Nq, Nk, 2)
        d_q = grad.sum((1, 2, 4)).permute(2, 0, 1) if ctx.needs_input_grad[0] else None
        d_k = grad.sum((0, 3)).permute(3, 0, 1, 2) if ctx.needs_input_grad[1] else None
        return d_q, d_k


def deformable_position_bias(table, query_points, key_points):
    """The deformable relative position bias phi(B^; R) of Eq. 9.

    Args:
        table (Tensor): (M, 2H0-1, 2W0-1) bias table B^, one per head.
        query_points (Tensor): (Nq, 2) query positions, normalised (y, x); or (S, Nq, 2),
            S sets of queries sampled in one call.
        key_points (Tensor): (B, G, Nk, 2) deformed key positions p + delta p.

    Returns:
        Tensor: (B, M, Nq, Nk) (or (S, B, M, Nq, Nk)), heads of group g reading the
        displacements of group g, in the dtype of ``table`` (sampled at points of at least
        float32).
    """
    B, G, Nk, _ = key_points.shape
    M = table.shape[0]
    Nq = query_points.shape[-2]
    S = query_points.numel() // (2 * Nq)
    # R = (q - k) / 2: continuous relative displacements, normalised to [-1, 1], in (x, y)
    # order, computed as two coordinate planes (2, S, B, G, Nq, Nk) and handed to grid_sample
    # as a permuted view (it reads strided grids): a broadcast add into an interleaved last
    # axis of 2 is 10-20x slower. The points are flipped and halved, not the displacements
    # (q / 2 + (k * -0.5) is (q - k) / 2 exactly: halving and negating a float are exact); the
    # keys are negated while small, so that R's gradient is summed before it is negated.
    # (contiguous: elementwise results keep their inputs' layout, and R would take theirs)
    q_planes = query_points.reshape(S, Nq, 2).flip(-1).permute(2, 0, 1).contiguous() * 0.5
    k_planes = key_points.flip(-1).permute(3, 0, 1, 2).contiguous() * -0.5  # (2, B, G, Nk)
    R = displacement_planes(q_planes, k_planes)
    tables = table.reshape(1, 1, G, M // G, *table.shape[1:]).expand(S, B, -1, -1, -1, -1)
    bias = sample(tables.reshape(S * B * G, M // G, *table.shape[1:]),
                  R.permute(1, 2, 3, 4, 5, 0).reshape(S * B * G, Nq, Nk, 2), xy=True)
    return bias.reshape(*query_points.shape[:-2], B, M, Nq, Nk).to(table.dtype)


def deformed_keys_values(x, points, w_k, b_k, w_v, b_v):
    """Eqs. 6-8: keys and values projected from x sampled at the deformed points.

    Args:
        x (Tensor): (B, C, H, W) input feature map.
        points (Tensor): (B, G, Hk, Wk, 2) deformed points; group g samples channels
            ``g*C/G .. (g+1)*C/G``.

    Returns:
        tuple[Tensor]: k~ and v~, each (B, C, Hk*Wk).
    """
    B, C, H, W = x.shape
    G, Hk, Wk = points.shape[1:4]
    # Eqs. 7-8: x~ = phi(x; p + delta p), each offset group samples its own channels
    x_sampled = sample(x.reshape(B * G, C // G, H, W), points.reshape(B * G, Hk, Wk, 2))
    x_sampled = x_sampled.reshape(B, C, Hk * Wk).to(x.dtype)
    # Eq. 6: k~ = x~ W_k, v~ = x~ W_v
    k = torch.matmul(w_k, x_sampled) + b_k[:, None]  # (B, C, Nk), contiguous
    v = torch.matmul(w_v, x_sampled) + b_v[:, None]
    return k, v


def deformable_attention(q, x, points, w_k, b_k, w_v, b_v, num_heads, rpe_table=None,
                         attn_bias=None, query_grid='centers'):
    """Deformable multi-head attention, Eqs. 6-9 of the paper.

    Args:
        q (Tensor): (B, C, H, W) queries ``q = x W_q``.
        x (Tensor): (B, C, H, W) the input feature map ``x``.
        points (Tensor): (B, G, Hk, Wk, 2) deformed points ``p + delta p`` of the G offset
            groups, normalised (y, x). Group g samples channels ``g*C/G .. (g+1)*C/G``.
        w_k, b_k, w_v, b_v (Tensor): key/value projections ``W_k, W_v`` (C, C) and biases (C,).
        num_heads (int): M; heads ``g*M/G .. (g+1)*M/G`` attend to group g's keys.
        rpe_table (Tensor, optional): (M, 2H0-1, 2W0-1) relative position bias table B^.
        attn_bias (Tensor, optional): an extra additive bias, broadcastable to (B, M, HW, Nk).
        query_grid (str): where the queries sit for the position bias (:data:`GRIDS`):
            ``'centers'`` (DAT) or ``'corners'`` (DAT++).

    Returns:
        Tensor: (B, C, H, W), the concatenated heads ``Concat(z^(1), ..., z^(M))`` (before W_o).
    """
    B, C, H, W = q.shape
    G, Nk = points.shape[1], points.shape[2] * points.shape[3]
    M, d = num_heads, C // num_heads
    # Eqs. 6-8: k~ = phi(x; p + delta p) W_k, v~ = phi(x; p + delta p) W_v
    k, v = deformed_keys_values(x, points, w_k, b_k, w_v, b_v)

    # Eq. 9: z^(m) = softmax(q^(m) k~^(m)T / sqrt(d) + phi(B^; R)) v~^(m)
    q = q.reshape(B * M, d, H * W)
    k = k.reshape(B * M, d, Nk)
    v = v.reshape(B * M, d, Nk)
    logits = torch.einsum('bcm,bcn->bmn', q, k) * d**-0.5  # (B*M, HW, Nk)
    if rpe_table is not None:
        query_points = grid_points(H, W, q.device, points.dtype, query_grid).reshape(H * W, 2)
        bias = deformable_position_bias(rpe_table, query_points, points.reshape(B, G, Nk, 2))
        logits = logits + bias.reshape(B * M, H * W, Nk)
    if attn_bias is not None:
        logits = (logits.reshape(B, M, H * W, Nk) + attn_bias).reshape(B * M, H * W, Nk)
    attn = logits.to(sampling_dtype(logits.dtype)).softmax(dim=-1).to(v.dtype)
    z = torch.einsum('bmn,bcn->bcm', attn, v)  # (B*M, d, HW)
    return z.reshape(B, C, H, W)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DeformableAttention(BaseModule):
    """Deformable multi-head attention module (Figure 2 of the paper).

    Args:
        embed_dims (int): C.
        num_heads (int): M.
        groups (int): G, the offset groups (M must be a multiple of G).
        feat_size (tuple[int]): (H0, W0), the feature size at the pretraining resolution;
            sizes the position tables (the relative table serves any size unchanged).
        key_downsample (int): r, the stride of the offset network's depthwise conv: the key
            grid is ``ceil(H/r) x ceil(W/r)`` with the default padding.
        offset_range (float): s, offsets are ``s * tanh(.)`` key-grid units of ``2/Hk``
            normalised, i.e. at most ``s/2`` key cells. ``0`` disables deformation. Negative
            (DAT++'s -1): the offsets are used as they are, unbounded, and the deformed points
            are clamped to ``[-1, 1]``.
        offset_kernel (int): k of the depthwise conv of the offset network.
        offset_padding (int, optional): its padding; ``None``: ``k // 2`` (DAT++ uses 0 where
            k == r, a rule the backbone applies).
        reference_grid (str): the key reference points (:data:`GRIDS`): ``'centers'`` (DAT)
            or ``'shifted'`` (DAT++, needs a negative ``offset_range``, whose clamp keeps the
            points on the map).
        query_grid (str): the query positions of the position bias (:data:`GRIDS`):
            ``'centers'`` (DAT) or ``'corners'`` (DAT++).
        pos_encoding (str): 'relative' (the paper's deformable relative position bias),
            'none', 'fixed' (a learnable (M, H0*W0, Hk0*Wk0) bias) or 'dwconv' (CSwin's LePE).
        use_offsets (bool): if False, keys are sampled on the plain reference grid. The offset
            network is still built (the paper's Table 6 counts it) but not run.

    Attributes:
        impl (str): ``'auto'`` (default), ``'reference'`` (:func:`deformable_attention`, the
            equations as written) or ``'chunked'`` (the memory-lean
            :func:`chunked_deformable_attention`, same result). ``'auto'`` takes the chunked
            path when no gradient is needed (its fused kernel is faster at every size: 1.05x
            for one 224 image, 3x at stage 3 of a 1280x800 one) or when one block's full
            logits would exceed ``chunk_threshold`` elements (it keeps no logits for the
            backward pass), and the reference path under tracing (FLOP counting, export).
        chunk_size (int): the chunked path's bound on one chunk's logits (elements).
        check_finite (bool): raise a ``ValueError`` when the input holds NaN or Inf
            (:func:`assert_finite`: one reduction per call, queued without synchronisation on
            CUDA, skipped under tracing and ``torch.compile``). NaN/Inf sampled at the
            deformed points would spread over every query silently.
    """

    IMPLS = ('auto', 'reference', 'chunked')
    impl = 'auto'
    check_finite = True
    chunk_threshold = 2**22
    chunk_size = 2**22

    def __init__(self, embed_dims, num_heads, groups, feat_size, key_downsample=1,
                 offset_range=2.0, offset_kernel=5, pos_encoding='relative', use_offsets=True,
                 offset_padding=None, reference_grid='centers', query_grid='centers',
                 init_cfg=None):
        super().__init__(init_cfg)
        if num_heads % groups != 0:
            raise ValueError(f'DeformableAttention: num_heads ({num_heads}) must be a multiple '
                             f'of groups ({groups})')
        if embed_dims % num_heads != 0:
            raise ValueError(f'DeformableAttention: embed_dims ({embed_dims}) must be divisible '
                             f'by num_heads ({num_heads})')
        for name, grid in (('reference_grid', reference_grid), ('query_grid', query_grid)):
            if grid not in GRIDS:
                raise ValueError(f'DeformableAttention: {name} must be one of {GRIDS}, '
                                 f'got {grid!r}')
        if reference_grid == 'shifted' and offset_range >= 0:
            raise ValueError("DeformableAttention: reference_grid='shifted' places points past "
                             'the map (its last point is at (n + 0.5) / (n - 1) * 2 - 1 > 1): '
                             'it needs a negative offset_range (unbounded offsets, points '
                             'clamped to the map)')
        if pos_encoding not in POS_ENCODINGS:
            raise ValueError(f'DeformableAttention: pos_encoding must be one of {POS_ENCODINGS}, '
                             f'got {pos_encoding!r}')
        if int(key_downsample) < 1:
            raise ValueError(f'DeformableAttention: key_downsample must be >= 1, '
                             f'got {key_downsample}')
        self.embed_dims, self.num_heads, self.groups = embed_dims, num_heads, groups
        self.feat_size = tuple(feat_size)
        self.key_downsample = int(key_downsample)
        self.offset_range = float(offset_range)
        self.pos_encoding = pos_encoding
        self.use_offsets = use_offsets
        self.reference_grid, self.query_grid = reference_grid, query_grid

        C, Cg = embed_dims, embed_dims // groups
        if offset_padding is None:
            offset_padding = offset_kernel // 2
        # theta_offset: depthwise conv (stride r) -> LN -> GELU -> 1x1 conv to (dy, dx), no bias
        self.conv_offset = nn.Sequential(
            nn.Conv2d(Cg, Cg, offset_kernel, self.key_downsample, offset_padding, groups=Cg),
            LayerNorm2d(Cg), nn.GELU(), nn.Conv2d(Cg, 2, 1, bias=False))
        self.proj_q = nn.Conv2d(C, C, 1)
        self.proj_k = nn.Conv2d(C, C, 1)
        self.proj_v = nn.Conv2d(C, C, 1)
        self.proj_out = nn.Conv2d(C, C, 1)

        H0, W0 = self.feat_size
        if pos_encoding == 'relative':
            self.rpe_table = nn.Parameter(torch.zeros(num_heads, 2 * H0 - 1, 2 * W0 - 1))
        elif pos_encoding == 'fixed':
            Hk0, Wk0 = self.key_grid_size(H0, W0)
            self.rpe_table = nn.Parameter(torch.zeros(num_heads, H0 * W0, Hk0 * Wk0))
        elif pos_encoding == 'dwconv':
            self.rpe_table = nn.Conv2d(C, C, 3, 1, 1, groups=C)
        else:
            self.rpe_table = None

    def key_grid_size(self, H, W):
        """(Hk, Wk): the offset network's output size on an H x W map."""
        dw = self.conv_offset[0]
        (k, _), (p, _), r = dw.kernel_size, dw.padding, self.key_downsample
        if H + 2 * p < k or W + 2 * p < k:
            raise ValueError(f'DeformableAttention: a {H}x{W} map is smaller than the offset '
                             f'network\'s {k}x{k} kernel with padding {p}')
        return (H + 2 * p - k) // r + 1, (W + 2 * p - k) // r + 1

    def init_weights(self):
        super().init_weights()
        if isinstance(self.rpe_table, nn.Parameter):
            trunc_normal_(self.rpe_table, std=0.01)

    def offsets(self, q):
        """theta_offset(q), the raw offsets of the G groups: (B, Hk, Wk, G, 2) (dy, dx).

        The same as ``self.conv_offset`` applied to each group's (B*G, C/G, H, W) map, but
        computed for all groups at once in channels-last layout (the tokens' own): the
        depthwise conv with its kernel repeated per group, then LayerNorm, GELU and the 1x1
        conv over each group's channels, which are the last axis there: no layout copies, and
        oneDNN's depthwise conv is faster channels-last (forward + backward of DAT-T's stage 3
        at 224, batch 16, on 2 CPU threads: 22.8 ms instead of 29.2 ms).
        """
        dw, norm, act, pw = self.conv_offset
        G = self.groups
        x = F.conv2d(q.contiguous(memory_format=torch.channels_last), dw.weight.repeat(G, 1, 1, 1),
                     dw.bias.repeat(G), dw.stride, dw.padding, groups=q.shape[1])
        B, C, Hk, Wk = x.shape
        x = x.permute(0, 2, 3, 1).reshape(B, Hk, Wk, G, C // G)
        x = act(F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        return torch.matmul(x, pw.weight.flatten(1).t())

    def deformed_points(self, q):
        """p + delta p of the G groups: (B, G, Hk, Wk, 2), normalised (y, x), >= float32."""
        B, C, H, W = q.shape
        Hk, Wk = self.key_grid_size(H, W)
        dtype = sampling_dtype(q.dtype)
        p = grid_points(Hk, Wk, q.device, dtype, self.reference_grid)
        p = p.expand(B, self.groups, Hk, Wk, 2)
        if self.offset_range < 0:  # DAT++: unbounded offsets, points clamped to the map
            if not self.use_offsets:
                return p.clamp(-1, 1)
            return (self.offsets(q).to(dtype).permute(0, 3, 1, 2, 4) + p).clamp(-1, 1)
        if not self.use_offsets:
            return p
        # delta p <- s tanh(delta p), in units of one key cell's half-extent (2/Hk / 2)
        offset = self.offsets(q).to(dtype).tanh() * self.offset_range
        offset = scale_yx(offset, 1.0 / Hk, 1.0 / Wk)
        return p + offset.permute(0, 3, 1, 2, 4)

    def fixed_bias(self, H, W, Hk, Wk):
        """The 'fixed' learnable bias, resized bilinearly when the sizes differ."""
        table = self.rpe_table
        (H0, W0), (Hk0, Wk0) = self.feat_size, self.key_grid_size(*self.feat_size)
        if (H, W, Hk, Wk) != (H0, W0, Hk0, Wk0):
            table = resize_fixed_bias(table, (H0, W0, Hk0, Wk0), (H, W, Hk, Wk))
        return table[None]

    def forward(self, x, hw_shape):
        """x: (B, L, C) tokens of an ``hw_shape`` map -> (B, L, C)."""
        check_tokens(self, x, hw_shape)
        B, L, C = x.shape
        H, W = hw_shape
        if self.check_finite:
            assert_finite(x, f'DeformableAttention: input x (shape {tuple(x.shape)}) holds NaN '
                          f'or Inf values; the network diverged or its input is corrupt')
        # the 1x1 projections as linear maps of the tokens; q and x are (B, C, H, W) views
        q = token_map(_pointwise(self.proj_q, x), hw_shape)
        x = token_map(x, hw_shape)
        points = self.deformed_points(q)
        attn_bias = None
        if self.pos_encoding == 'fixed':
            attn_bias = self.fixed_bias(H, W, *points.shape[2:4])
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        logits_size = B * self.num_heads * H * W * points.shape[2] * points.shape[3]
        z = self._attention_fn(logits_size, needs_grad)(
            q, x, points, self.proj_k.weight.flatten(1), self.proj_k.bias,
            self.proj_v.weight.flatten(1), self.proj_v.bias, self.num_heads,
            rpe_table=self.rpe_table if self.pos_encoding == 'relative' else None,
            attn_bias=attn_bias, query_grid=self.query_grid)
        if self.pos_encoding == 'dwconv':
            z = z + self.rpe_table(q)
        return _pointwise(self.proj_out, z.flatten(2).transpose(1, 2))

    def _attention_fn(self, logits_size, needs_grad=True):
        impl = self.impl
        if impl == 'auto':
            if is_tracing() or (needs_grad and logits_size <= self.chunk_threshold):
                impl = 'reference'
            else:
                impl = 'chunked'
        if impl == 'reference':
            return deformable_attention
        if impl == 'chunked':
            from .deformable_attention_chunked import chunked_deformable_attention
            return partial(chunked_deformable_attention, max_chunk_elements=self.chunk_size)
        raise ValueError(f"DeformableAttention.impl must be 'auto', 'reference' or 'chunked', "
                         f'got {self.impl!r}')

    def extra_repr(self):
        return (f'groups={self.groups}, key_downsample={self.key_downsample}, '
                f'offset_range={self.offset_range}, pos_encoding={self.pos_encoding!r}, '
                f'use_offsets={self.use_offsets}, reference_grid={self.reference_grid!r}, '
                f'query_grid={self.query_grid!r}')


def token_map(tokens, hw_shape):
    """(B, H*W, C) tokens -> their (B, C, H, W) map, a channels-last view.

    Made by a permute, so the batch axis keeps the stride H*W*C even when B = 1: the
    ``transpose(1, 2).reshape(B, C, H, W)`` of one image gives it the stride C, which oneDNN
    does not read as channels-last, so every conv on it first copied the map to NCHW (a
    depthwise 3x3 conv on DAT++'s 200x320x256 stage-1 FFN map, forward + backward on 2 CPU
    threads: 395 ms instead of 116 ms).
    """
    B, L, C = tokens.shape
    return tokens.reshape(B, *hw_shape, C).permute(0, 3, 1, 2)


def _pointwise(conv, tokens):
    """A 1x1 ``conv`` applied to (B, L, C) tokens, as the linear map it is."""
    return F.linear(tokens, conv.weight.flatten(1), conv.bias)


def check_tokens(module, x, hw_shape):
    """Raise a ``ValueError`` naming ``module`` unless ``x`` is (B, H*W, C) tokens of an
    ``hw_shape`` (H, W) map with ``module.embed_dims`` channels."""
    name, C = type(module).__name__, module.embed_dims
    if x.dim() != 3 or x.shape[2] != C:
        raise ValueError(f'{name}: input x must be (B, L, {C}) tokens, got shape '
                         f'{tuple(x.shape)}')
    if hw_shape[0] * hw_shape[1] != x.shape[1]:
        raise ValueError(f'{name}: hw_shape {tuple(hw_shape)} does not match the '
                         f'{x.shape[1]} tokens of input x')


def assert_finite(x, message):
    """Raise ``ValueError(message)`` when ``x`` holds NaN or Inf.

    Skipped under tracing (FLOP counting, export), where a data-dependent check would be
    frozen into the graph. On the CPU, one sum (a NaN or Inf makes it NaN or Inf; 20-50x
    faster than ``isfinite(x).all()``, which is only run to tell a sum that overflowed
    from finite values). On CUDA the check is queued on the stream instead
    (``torch._assert_async``): no host-device synchronisation, and a failure surfaces as a
    device-side assertion, with ``message``, at the next synchronisation (it ends the process's
    CUDA context, as a diverged run would end anyway).
    """
    if is_tracing():
        return
    if x.is_cuda:
        torch._assert_async(torch.isfinite(x).all(), message)
    elif (not torch.isfinite(x.sum(dtype=sampling_dtype(x.dtype)))
          and not torch.isfinite(x).all()):
        raise ValueError(message)


def scale_yx(t, sy, sx):
    """``t * (sy, sx)`` over the last (y, x) axis. ``sy, sx`` may be sizes traced for export
    (tensors or symbolic floats), which a ``new_tensor`` would freeze into constants."""
    if isinstance(sy, float) and isinstance(sx, float):
        return t * t.new_tensor([sy, sx])
    return torch.stack([t[..., 0] * sy, t[..., 1] * sx], dim=-1)


def size_max(a, b):
    """``max(a, b)`` of sizes that may be traced for export: tensors (TorchScript) or symbolic
    ints (``torch.export``), where Python's ``max`` would freeze the example's branch."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return torch.sym_max(a, b)


def is_tracing():
    """True while a graph is captured: ``torch.jit`` tracing or scripting (FLOP counting,
    TorchScript export), ``torch.onnx.export``, ``torch.export`` (the dynamo ONNX exporter) or
    ``torch.compile``. No data-dependent checks there, the attentions take their definitions'
    paths, and shapes must come from the tensors, not Python ints."""
    compiler = getattr(torch, 'compiler', None)
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or getattr(compiler, 'is_exporting', lambda: False)()
            or getattr(compiler, 'is_compiling', lambda: False)())


def resize_fixed_bias(table, src, dst):
    """Resize a (M, H*W, Hk*Wk) bias from src=(H, W, Hk, Wk) to dst sizes, bilinearly."""
    M = table.shape[0]
    H, W, Hk, Wk = src
    H2, W2, Hk2, Wk2 = dst
    t = table.reshape(M * H * W, 1, Hk, Wk)
    if (Hk, Wk) != (Hk2, Wk2):
        t = F.interpolate(t, size=(Hk2, Wk2), mode='bilinear', align_corners=False)
    t = t.reshape(M, H, W, Hk2 * Wk2).permute(0, 3, 1, 2).reshape(M * Hk2 * Wk2, 1, H, W)
    if (H, W) != (H2, W2):
        t = F.interpolate(t, size=(H2, W2), mode='bilinear', align_corners=False)
    return t.reshape(M, Hk2 * Wk2, H2 * W2).transpose(1, 2).contiguous()


def resize_rpe_table(table, size):
    """Resize a (M, 2H0-1, 2W0-1) deformable bias table; it is sampled with align_corners."""
    return F.interpolate(table[None], size=size, mode='bilinear', align_corners=True)[0]


__all__ = ['deformable_attention', 'deformable_position_bias', 'grid_axis', 'grid_points',
           'GRIDS', 'sample', 'sampling_dtype', 'is_tracing', 'size_max', 'assert_finite',
           'check_tokens', 'DeformableAttention', 'resize_fixed_bias', 'resize_rpe_table',
           'token_map']
