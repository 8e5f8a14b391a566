"""DAT: Vision Transformer with Deformable Attention (Xia et al., CVPR 2022), and DAT++.

A four-stage pyramid (strides 4/8/16/32). In DAT every stage stacks pairs of blocks
``(local window attention, X)`` where X is shift-window attention in stages 1-2 and
deformable attention in stages 3-4 (Table 1); ``stage_types`` picks X per stage for the
ablations (Tables 6-8). DAT++ (Xia et al., arXiv 2309.01430) is the same family with other
parts (:data:`FAMILIES`): a convolutional stem and downsampling, neighbourhood attention
instead of window attention, deformable attention in every stage, a local perception unit
before every block and a convolutional FFN. Parameter names follow mmpretrain's Swin where the
modules are the same; ``tools/model_converters/dat_to_mmdat.py`` maps the authors'
checkpoints onto them.
"""
import copy
import numbers
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.drop import DropPath
from mmcv.cnn.bricks.transformer import FFN, PatchEmbed
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from mmengine.utils import to_2tuple
from torch.nn.modules.batchnorm import _BatchNorm

from ...registry import register_model
from ..layers.ddetr_attention import DeformableDETRAttention
from ..layers.deformable_attention import (POS_ENCODINGS, DeformableAttention, LayerNorm2d,
                                           assert_finite, resize_fixed_bias, resize_rpe_table,
                                           token_map)
from ..layers.neighborhood_attention import NeighborhoodAttention
from ..layers.spatial_reduction_attention import SpatialReductionAttention
from ..layers.window_attention import WindowMSA, resize_window_bias_table, window_attention

#: The attention of each block, by letter, in a stage's layout (see :class:`DATStage`):
#: L local window, S shifted window, D deformable, N neighbourhood, P PVT's spatial-reduction,
#: X Deformable DETR's.
ATTENTIONS = 'LSDNPX'
#: Named stage layouts of DAT's ``stage_types`` (the paper's and the ablations'); any string of
#: :data:`ATTENTIONS` letters is a layout too, e.g. DAT++'s ``'ND'`` and ``'DD'``.
STAGE_TYPES = {'swin': 'LS', 'deformable': 'LD', 'pvt': 'P', 'ddetr': 'LX'}


def dwconv_tokens(conv, x, hw_shape):
    """A (depthwise) conv over (B, L, C) tokens of an ``hw_shape`` map -> (B, L, C'), run in
    channels-last layout (the tokens' own: no copies, see ``token_map``)."""
    return conv(token_map(x, hw_shape)).flatten(2).transpose(1, 2)


class ConvFFN(BaseModule):
    """DAT++'s FFN on tokens: Linear(C, F), a depthwise 3x3 conv added on (its own
    shortcut), GELU, Linear(F, C). The conv gives every token its neighbours' features."""

    def __init__(self, embed_dims, feedforward_channels, init_cfg=None):
        super().__init__(init_cfg)
        self.fc1 = nn.Linear(embed_dims, feedforward_channels)
        self.dwconv = nn.Conv2d(feedforward_channels, feedforward_channels, 3, 1, 1,
                                groups=feedforward_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(feedforward_channels, embed_dims)

    def forward(self, x, hw_shape):
        h = self.fc1(x)
        h = h + dwconv_tokens(self.dwconv, h, hw_shape)
        return self.fc2(self.act(h))


class ConvStem(BaseModule):
    """DAT++'s stem: 3x3 stride-2 conv to C/2 -> LN -> GELU -> 3x3 stride-2 conv -> LN
    (convs with biases); (B, 3, H, W) -> (B, L, C) tokens of a ceil(H/4) x ceil(W/4) map."""

    def __init__(self, in_channels, embed_dims, init_cfg=None):
        super().__init__(init_cfg)
        self.projection = nn.Sequential(
            nn.Conv2d(in_channels, embed_dims // 2, 3, 2, 1), LayerNorm2d(embed_dims // 2),
            nn.GELU(), nn.Conv2d(embed_dims // 2, embed_dims, 3, 2, 1), LayerNorm2d(embed_dims))

    def forward(self, x):
        x = self.projection(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


class DATBlock(BaseModule):
    """Pre-norm Transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(FFN(LN(x))).

    ``ffn``: ``'mlp'`` (Linear-GELU-Linear) or ``'conv'`` (:class:`ConvFFN`, DAT++); ``lpu``:
    first add a depthwise 3x3 conv of x (DAT++'s local perception unit, no drop path).
    """

    def __init__(self, embed_dims, attn, ffn_ratio=4., drop_path=0., with_cp=False, ffn='mlp',
                 lpu=False, init_cfg=None):
        super().__init__(init_cfg)
        self.with_cp = with_cp
        self.lpu = nn.Conv2d(embed_dims, embed_dims, 3, 1, 1, groups=embed_dims) if lpu else None
        self.norm1 = build_norm_layer(dict(type='LN'), embed_dims)[1]
        self.attn = attn
        self.norm2 = build_norm_layer(dict(type='LN'), embed_dims)[1]
        if ffn == 'conv':
            self.ffn = ConvFFN(embed_dims, int(embed_dims * ffn_ratio))
        else:
            self.ffn = FFN(
                embed_dims=embed_dims, feedforward_channels=int(embed_dims * ffn_ratio),
                num_fcs=2, ffn_drop=0., act_cfg=dict(type='GELU'), add_identity=True,
                dropout_layer=dict(type='DropPath', drop_prob=drop_path))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, hw_shape):

        def _inner_forward(x):
            if self.lpu is not None:
                x = x + dwconv_tokens(self.lpu, x, hw_shape)
            x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
            if isinstance(self.ffn, ConvFFN):
                return x + self.drop_path(self.ffn(self.norm2(x), hw_shape))
            return self.ffn(self.norm2(x), identity=x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class DATStage(BaseModule):
    """One stage: an optional 2x downsampling conv, then ``depth`` blocks.

    ``layout`` is a string of :data:`ATTENTIONS` letters, the attention of each block in turn
    (repeated over the depth): DAT's ``'LS'`` and ``'LD'`` alternate local window attention
    with shift-window or deformable attention (``deform_cfg``), ``'LX'`` with Deformable
    DETR's (``ddetr_cfg``, Table 8), ``'P'`` is PVT's spatial-reduction attention
    (``sra_cfg``) in every block (Table 6, row "P"); DAT++'s ``'ND'`` alternates neighbourhood
    attention (``na_cfg``) with deformable attention, ``'DD'`` is deformable only.
    ``block_cfg`` (``ffn``, ``lpu``) is passed to every :class:`DATBlock`.
    """

    def __init__(self, in_channels, embed_dims, depth, num_heads, layout, window_size,
                 drop_paths, downsample=False, conv_stem=False, with_cp=False,
                 deform_cfg=None, sra_cfg=None, ddetr_cfg=None, na_cfg=None, block_cfg=None,
                 init_cfg=None):
        super().__init__(init_cfg)
        if downsample:
            # non-overlapping 2x2 conv (Appendix B, DAT++: overlapping 3x3) without bias -> LN
            k, p = (3, 1) if conv_stem else (2, 0)
            self.downsample = PatchEmbed(
                in_channels=in_channels, embed_dims=embed_dims, kernel_size=k, stride=2,
                padding=p if conv_stem else 'corner', bias=False, norm_cfg=dict(type='LN'))
        else:
            self.downsample = None

        def attention(letter):
            if letter in 'LS':
                return window_attention(embed_dims, num_heads, window_size, shifted=letter == 'S')
            if letter == 'D':
                return DeformableAttention(embed_dims, num_heads, **deform_cfg)
            if letter == 'N':
                return NeighborhoodAttention(embed_dims, num_heads, **na_cfg)
            if letter == 'P':
                return SpatialReductionAttention(embed_dims, num_heads, **sra_cfg)
            return DeformableDETRAttention(embed_dims, num_heads, **ddetr_cfg)

        self.blocks = ModuleList([
            DATBlock(embed_dims, attention(layout[i % len(layout)]), drop_path=drop_paths[i],
                     with_cp=with_cp, **(block_cfg or {})) for i in range(depth)])

    def forward(self, x, hw_shape):
        if self.downsample is not None:
            x, hw_shape = self.downsample(token_map(x, hw_shape))
        for block in self.blocks:
            x = block(x, hw_shape)
        return x, hw_shape


#: What distinguishes DAT and DAT++ beyond their sizes. An arch of the zoo names its family; a
#: custom arch dict may name one (``family``, default ``'dat'``) and override any of these keys.
#: ``None`` constructor arguments of :class:`DAT` take their value from here.
FAMILIES = {
    'dat': dict(
        stage_types=('swin', 'swin', 'deformable', 'deformable'),
        key_downsample=(4, 2, 1, 1), offset_range=2.0, offset_kernels=(9, 7, 5, 3),
        conv_stem=False,  # True: Appendix B's 7x7 stride-4 stem and 3x3 downsampling
        conv_stem_type='7x7', offset_padding='half', reference_grid='centers',
        query_grid='centers', ffn='mlp', lpu=False),
    'dat++': dict(
        stage_types=('ND', 'ND', 'ND', 'DD'),
        key_downsample=(8, 4, 2, 1), offset_range=-1.0, offset_kernels=(9, 7, 5, 3),
        conv_stem=True,  # two 3x3 stride-2 convs (False: a 4x4 stride-4 patch conv)
        conv_stem_type='3x3', offset_padding='dat++', reference_grid='shifted',
        query_grid='corners', ffn='conv', lpu=True),
}


@register_model()
class DAT(BaseModule):
    """Deformable Attention Transformer backbone: DAT and DAT++.

    Args:
        arch (str | dict): DAT (Table 1): ``'tiny'``/``'small'``/``'base'`` (or
            ``'t'``/``'s'``/``'b'``); DAT++: ``'tiny++'``/``'small++'``/``'base++'`` (or
            ``'t++'``/``'s++'``/``'b++'``); ``'nano'``/``'nano++'`` (``'n'``/``'n++'``; not in
            the papers, small models for CPU demos and tests); or a dict with keys
            ``embed_dims``, ``depths``, ``num_heads``, ``groups`` (4 entries each; ``depths``
            counts single blocks), optionally ``family`` (``'dat'`` or ``'dat++'``) and any key
            of :data:`FAMILIES` to override (e.g. ``ffn='mlp', lpu=False`` for DAT++ without
            ConvFFN and local perception units).
        img_size (int | tuple): pretraining image size. It sizes the deformable position
            tables (feature size at the stage, e.g. 14x14 in stage 3 at 224); inputs of any
            size work.
        in_channels (int): input channels. Defaults to 3.
        window_size (int): window of the local and shift-window attention (7; 12 at 384).
        neighborhood_kernel (int): kernel of the neighbourhood attention (DAT++: 7).
        stage_types (Sequence[str], optional): per stage, the layout of its blocks: a named
            layout of :data:`STAGE_TYPES` (DAT): ``'swin'`` (local window and shift-window
            attention in turn), ``'deformable'`` (local window and deformable),
            ``'ddetr'`` (local window and Deformable DETR's attention, Table 8) or ``'pvt'``
            (PVT's spatial-reduction attention in every block, Table 6, row "P"); or a string of
            :data:`ATTENTIONS` letters, repeated over the stage, e.g. DAT++'s ``'ND'``
            (neighbourhood and deformable) and ``'DD'``. Default: the family's, DAT's
            ``('swin', 'swin', 'deformable', 'deformable')``, DAT++'s
            ``('ND', 'ND', 'ND', 'DD')``.
        key_downsample (int | Sequence[int], optional): r of the deformable blocks, per stage
            or for all. DAT's released ImageNet models use r = 1 in stages 3-4; mmdat's DAT
            default (4, 2, 1, 1) gives every stage a 14x14 key grid at 224, which reproduces the
            FLOPs of Table 7's variants with deformable stages 1-2. Dense configs choose larger
            r (README). DAT++: (8, 4, 2, 1).
        offset_range (float | Sequence[float], optional): s, the offset range factor (DAT:
            2). Negative (DAT++: -1): unbounded offsets, the points clamped to the map.
        offset_kernels (Sequence[int], optional): k of the offset network's depthwise conv
            per stage (both families: 9, 7, 5, 3).
        pos_encoding (str): position encoding of the deformable blocks: ``'relative'``,
            ``'none'``, ``'fixed'`` or ``'dwconv'`` (Table 6).
        use_offsets (bool): sample keys at deformed points (True) or on the reference grid.
        sr_ratios (int | Sequence[int]): spatial-reduction ratio of the ``'pvt'`` stages
            (PVT's (8, 4, 2, 1)).
        ddetr_points (int | str | Sequence[int | str]): sampling points per query and head
            of the ``'ddetr'`` stages: a number, or ``'same'`` for as many as the keys of
            DAT's deformable attention in that stage at ``img_size`` (``Hk0 * Wk0``: 196 in
            stage 3 and 49 in stage 4 at 224). Defaults to 16.
        conv_stem (bool, optional): overlapping conv stem and 3x3 downsampling: DAT's
            Appendix B variant (7x7 stride-4 stem) or DAT++'s (two 3x3 stride-2 convs, its
            default); False: a 4x4 patch stem and 2x2 downsampling (DAT's default).
        drop_path_rate (float): stochastic depth, rising linearly over all blocks.
        out_indices (Sequence[int]): stages whose (LayerNorm-ed) maps are returned.
        frozen_stages (int): stages ``0..frozen_stages`` (and the stem) are frozen; -1: none.
        norm_eval (bool): keep the norm layers in eval mode during training (DAT has only
            LayerNorms, which behave the same in both modes; kept for API parity).
        with_cp (bool): activation checkpointing of every block.
        attn_impl (str | dict): how the deformable and neighbourhood attentions are computed
            (the result is the same): ``'auto'`` (default: the memory-lean paths, the
            definitions under tracing) or ``'reference'`` for both, or a dict with keys
            ``'deformable'`` (``'auto'``, ``'reference'``, ``'chunked'``: see
            :class:`DeformableAttention`) and ``'neighborhood'`` (``'auto'``,
            ``'reference'``, ``'tiled'``: see :class:`NeighborhoodAttention`).
        attn_chunk_size (int | dict, optional): the lean paths' bound on one chunk's logits
            (elements; default 2**22), for both or per kind as ``attn_impl``.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint=..., prefix=...)``.
    """

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], {
            'embed_dims': [96, 192, 384, 768], 'depths': [2, 2, 6, 2],
            'num_heads': [3, 6, 12, 24], 'groups': [1, 2, 3, 6]}),
        **dict.fromkeys(['s', 'small'], {
            'embed_dims': [96, 192, 384, 768], 'depths': [2, 2, 18, 2],
            'num_heads': [3, 6, 12, 24], 'groups': [1, 2, 3, 6]}),
        **dict.fromkeys(['b', 'base'], {
            'embed_dims': [128, 256, 512, 1024], 'depths': [2, 2, 18, 2],
            'num_heads': [4, 8, 16, 32], 'groups': [1, 2, 4, 8]}),
        # not in the paper: a small DAT for CPU demos and tests (DAT-T's layout, 1/3 width)
        **dict.fromkeys(['n', 'nano'], {
            'embed_dims': [32, 64, 128, 256], 'depths': [2, 2, 2, 2],
            'num_heads': [1, 2, 4, 8], 'groups': [1, 1, 2, 4]}),
        # DAT++ (the authors' released configs, dat_{tiny,small,base}.yaml)
        **dict.fromkeys(['t++', 'tiny++'], {
            'family': 'dat++', 'embed_dims': [64, 128, 256, 512], 'depths': [2, 4, 18, 2],
            'num_heads': [2, 4, 8, 16], 'groups': [1, 2, 4, 8]}),
        **dict.fromkeys(['s++', 'small++'], {
            'family': 'dat++', 'embed_dims': [96, 192, 384, 768], 'depths': [2, 4, 18, 2],
            'num_heads': [3, 6, 12, 24], 'groups': [1, 2, 3, 6]}),
        **dict.fromkeys(['b++', 'base++'], {
            'family': 'dat++', 'embed_dims': [128, 256, 512, 1024], 'depths': [2, 4, 18, 2],
            'num_heads': [4, 8, 16, 32], 'groups': [2, 4, 8, 16]}),
        # not in the paper: a small DAT++ for CPU demos and tests
        **dict.fromkeys(['n++', 'nano++'], {
            'family': 'dat++', 'embed_dims': [32, 64, 128, 256], 'depths': [2, 2, 2, 2],
            'num_heads': [1, 2, 4, 8], 'groups': [1, 1, 2, 4]}),
    }
    num_stages = 4
    min_input_size = 32  # total stride: the last stage needs at least one token
    #: raise on NaN/Inf input images (one reduction; skipped under tracing, see forward)
    check_finite = True

    def __init__(self,
                 arch='tiny',
                 img_size=224,
                 in_channels=3,
                 window_size=7,
                 neighborhood_kernel=7,
                 stage_types=None,
                 key_downsample=None,
                 offset_range=None,
                 offset_kernels=None,
                 pos_encoding='relative',
                 use_offsets=True,
                 sr_ratios=(8, 4, 2, 1),
                 ddetr_points=16,
                 conv_stem=None,
                 drop_path_rate=0.2,
                 out_indices=(3, ),
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 attn_impl='auto',
                 attn_chunk_size=None,
                 init_cfg=None):
        super().__init__(init_cfg)
        self.arch_settings = self._parse_arch(arch)
        dims = self.arch_settings['embed_dims']
        depths = self.arch_settings['depths']
        heads = self.arch_settings['num_heads']
        groups = self.arch_settings['groups']
        family = self.arch_settings['family_settings']
        stage_types = family['stage_types'] if stage_types is None else stage_types
        key_downsample = family['key_downsample'] if key_downsample is None else key_downsample
        offset_range = family['offset_range'] if offset_range is None else offset_range
        offset_kernels = family['offset_kernels'] if offset_kernels is None else offset_kernels
        conv_stem = family['conv_stem'] if conv_stem is None else conv_stem

        if not _is_int(in_channels) or in_channels < 1:
            raise ValueError(f'DAT: in_channels must be a positive int, got {in_channels!r}')
        img_size = tuple(to_2tuple(img_size))
        if len(img_size) != 2 or not all(_is_int(s) and s >= self.min_input_size
                                         for s in img_size):
            raise ValueError(f'DAT: img_size (the pretraining size that sizes the position '
                             f'tables) must be an int or (H, W) of ints >= '
                             f'{self.min_input_size}, got {img_size!r}')
        if not _is_int(window_size) or window_size < 2:
            raise ValueError(f'DAT: window_size must be an int >= 2, got {window_size!r}')
        if not _is_int(neighborhood_kernel) or neighborhood_kernel < 1 or \
                neighborhood_kernel % 2 == 0:
            raise ValueError(f'DAT: neighborhood_kernel must be an odd int >= 1, '
                             f'got {neighborhood_kernel!r}')
        stage_types = self._per_stage(stage_types, 'stage_types')
        layouts = []
        for t in stage_types:
            layout = STAGE_TYPES.get(t, t)
            if not isinstance(layout, str) or not layout or any(c not in ATTENTIONS
                                                                for c in layout):
                raise ValueError(f'DAT: stage_types entries must be one of '
                                 f'{tuple(STAGE_TYPES)} or a layout of the letters '
                                 f'{ATTENTIONS!r} (e.g. \'ND\'), got {t!r}')
            layouts.append(layout)
        if pos_encoding not in POS_ENCODINGS:
            raise ValueError(f'DAT: pos_encoding must be one of {POS_ENCODINGS}, '
                             f'got {pos_encoding!r}')
        key_downsample = self._per_stage(key_downsample, 'key_downsample')
        offset_range = self._per_stage(offset_range, 'offset_range')
        offset_kernels = self._per_stage(offset_kernels, 'offset_kernels')
        sr_ratios = self._per_stage(sr_ratios, 'sr_ratios')
        for name, values in (('key_downsample', key_downsample), ('sr_ratios', sr_ratios)):
            if not all(_is_int(v) and v >= 1 for v in values):
                raise ValueError(f'DAT: {name} entries must be ints >= 1, got {values!r}')
        if not all(_is_int(k) and k >= 1 and k % 2 == 1 for k in offset_kernels):
            raise ValueError(f'DAT: offset_kernels entries must be odd ints >= 1 (the offset '
                             f'network keeps the key grid size), got {offset_kernels!r}')
        unbounded = family['reference_grid'] == 'shifted'
        if not all(_is_number(s) and (s < 0 if unbounded else s >= 0) for s in offset_range):
            raise ValueError(
                f'DAT: offset_range (s) entries must be numbers '
                f'{"< 0 (unbounded offsets, DAT++)" if unbounded else ">= 0"}, '
                f'got {offset_range!r}')
        ddetr_points = self._per_stage(ddetr_points, 'ddetr_points')
        for p in ddetr_points:
            if p != 'same' and not (isinstance(p, int) and p >= 1):
                raise ValueError(f"DAT: ddetr_points entries must be ints >= 1 or 'same', "
                                 f'got {p!r}')
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
            raise TypeError(f'DAT: out_indices must be an int or a non-empty sequence, '
                            f'got {out_indices!r}')
        if not all(_is_int(i) for i in out_indices):
            raise TypeError(f'DAT: out_indices entries must be ints, got {out_indices!r}')
        out_indices = sorted(i % self.num_stages if -self.num_stages <= i < 0 else i
                             for i in out_indices)
        for i in out_indices:
            if not 0 <= i < self.num_stages:
                raise ValueError(f'DAT: out_indices {tuple(out_indices)} out of range: DAT has '
                                 f'{self.num_stages} stages (0..{self.num_stages - 1})')
        if not _is_int(frozen_stages) or not -1 <= frozen_stages < self.num_stages:
            raise ValueError(f'DAT: frozen_stages must be in -1..{self.num_stages - 1}, '
                             f'got {frozen_stages}')
        if not _is_number(drop_path_rate) or not 0 <= drop_path_rate < 1:
            raise ValueError(f'DAT: drop_path_rate must be in [0, 1), got {drop_path_rate}')

        self.in_channels = in_channels
        self.img_size = img_size
        self.window_size = window_size
        self.stage_types = stage_types
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        if conv_stem and family['conv_stem_type'] == '3x3':
            self.patch_embed = ConvStem(in_channels, dims[0])
        else:
            # 4x4 stride-4 conv (Appendix B: 7x7 stride 4, padding 3) -> LN
            self.patch_embed = PatchEmbed(
                in_channels=in_channels, embed_dims=dims[0], kernel_size=7 if conv_stem else 4,
                stride=4, padding=3 if conv_stem else 'corner', norm_cfg=dict(type='LN'))

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = ModuleList()
        for i in range(self.num_stages):
            feat_size = tuple(s // (4 * 2**i) for s in self.img_size)
            k, r = offset_kernels[i], key_downsample[i]
            deform_cfg = dict(
                groups=groups[i], feat_size=feat_size, key_downsample=r,
                offset_range=offset_range[i], offset_kernel=k, pos_encoding=pos_encoding,
                use_offsets=use_offsets, reference_grid=family['reference_grid'],
                query_grid=family['query_grid'],
                # DAT++: no padding where the kernel equals the stride (never in its zoo)
                offset_padding=0 if family['offset_padding'] == 'dat++' and k == r else None)
            num_points = ddetr_points[i]
            if num_points == 'same':  # DAT's key count Hk0 * Wk0 at the pretraining size
                Hk0, Wk0 = ((s - 1) // r + 1 for s in feat_size)
                num_points = Hk0 * Wk0
            self.stages.append(DATStage(
                in_channels=dims[i - 1] if i > 0 else dims[0], embed_dims=dims[i],
                depth=depths[i], num_heads=heads[i], layout=layouts[i],
                window_size=window_size, drop_paths=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                downsample=i > 0, conv_stem=conv_stem, with_cp=with_cp,
                deform_cfg=deform_cfg, sra_cfg=dict(sr_ratio=sr_ratios[i]),
                ddetr_cfg=dict(num_points=num_points),
                na_cfg=dict(kernel_size=neighborhood_kernel),
                block_cfg=dict(ffn=family['ffn'], lpu=family['lpu'])))

        self._set_attention_paths(attn_impl, attn_chunk_size)
        self.num_features = dims
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm_layer(dict(type='LN'), dims[i])[1])

        self._register_load_state_dict_pre_hook(self._resize_position_tables)

    # ------------------------------------------------------------------ construction helpers
    def _parse_arch(self, arch):
        """The arch's sizes, and its family's settings (with its overrides) under
        ``'family_settings'``."""
        if isinstance(arch, str):
            key = arch.lower()
            if key not in self.arch_zoo:
                raise ValueError(f'DAT: unknown arch {arch!r}; choose one of '
                                 f'{sorted(set(self.arch_zoo))} or pass a dict')
            arch = copy.deepcopy(self.arch_zoo[key])
            family = arch.pop('family', 'dat')
            return dict(arch, family=family, family_settings=dict(FAMILIES[family]))
        if not isinstance(arch, dict):
            raise TypeError(f'DAT: arch must be a str or a dict, got {type(arch).__name__}')
        essential = {'embed_dims', 'depths', 'num_heads', 'groups'}
        missing = essential - set(arch)
        if missing:
            raise ValueError(f'DAT: custom arch misses keys {sorted(missing)}')
        family = arch.get('family', 'dat')
        if family not in FAMILIES:
            raise ValueError(f'DAT: custom arch family must be one of {tuple(FAMILIES)}, '
                             f'got {family!r}')
        unknown = set(arch) - essential - {'family'} - set(FAMILIES[family])
        if unknown:
            raise ValueError(f'DAT: custom arch has unknown keys {sorted(unknown)}; besides '
                             f'{sorted(essential)} it takes family and '
                             f'{sorted(FAMILIES[family])}')
        settings = dict(FAMILIES[family], **{k: arch[k] for k in FAMILIES[family] if k in arch})
        arch = {k: list(self._per_stage(arch[k], k)) for k in essential}
        for k in sorted(essential):
            if not all(_is_int(v) and v >= 1 for v in arch[k]):
                raise ValueError(f'DAT: custom arch {k} entries must be ints >= 1, '
                                 f'got {arch[k]!r}')
        for i, (c, m, g) in enumerate(zip(arch['embed_dims'], arch['num_heads'],
                                          arch['groups'])):
            if c % m != 0:
                raise ValueError(f'DAT: stage {i}: embed_dims {c} not divisible by '
                                 f'num_heads {m}')
            if m % g != 0:
                raise ValueError(f'DAT: stage {i}: num_heads {m} is not a multiple of '
                                 f'groups {g}')
        return dict(arch, family=family, family_settings=settings)

    def _set_attention_paths(self, impl, chunk_size):
        """Set ``impl`` and ``chunk_size`` of every deformable and neighbourhood attention."""
        kinds = {'deformable': DeformableAttention, 'neighborhood': NeighborhoodAttention}
        for name, value in (('attn_impl', impl), ('attn_chunk_size', chunk_size)):
            if isinstance(value, Mapping) and set(value) - set(kinds):
                raise ValueError(f'DAT: {name} keys must be among {tuple(kinds)}, got '
                                 f'{sorted(value)}')
        for kind, cls in kinds.items():
            if isinstance(impl, Mapping):
                kind_impl, valid = impl.get(kind, 'auto'), cls.IMPLS
            else:  # one value for both kinds
                kind_impl, valid = impl, ('auto', 'reference')
            if kind_impl not in valid:
                raise ValueError(f"DAT: attn_impl must be 'auto', 'reference' or a dict "
                                 f'{{kind: impl}}; {kind} attention takes one of {cls.IMPLS}, '
                                 f'got {impl!r}')
            size = chunk_size.get(kind) if isinstance(chunk_size, Mapping) else chunk_size
            if size is not None and (not _is_int(size) or size < 1):
                raise ValueError(f'DAT: attn_chunk_size must be a positive int, got {size!r}')
            for m in self.modules():
                if isinstance(m, cls):
                    m.impl = kind_impl
                    if size is not None:
                        m.chunk_size = size

    def _per_stage(self, value, name):
        if isinstance(value, (list, tuple)):
            if len(value) != self.num_stages:
                raise ValueError(f'DAT: {name} needs {self.num_stages} entries (one per stage),'
                                 f' got {len(value)}: {value!r}')
            return tuple(value)
        return (value, ) * self.num_stages

    # ------------------------------------------------------------------ forward
    def forward(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError('DAT expects a 4-D (B, C, H, W) image tensor, got '
                             f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}')
        if not x.is_floating_point():
            raise TypeError(f'DAT expects a floating-point image tensor, got {x.dtype} (use a '
                            f'data preprocessor to convert and normalise the images)')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'DAT was built for {self.in_channels} input channels '
                             f'(in_channels), got an input with {x.shape[1]} '
                             f'(shape {tuple(x.shape)})')
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f'DAT needs images of at least {self.min_input_size}x'
                             f'{self.min_input_size} pixels (its total stride), got '
                             f'{x.shape[2]}x{x.shape[3]}')
        if self.check_finite:
            assert_finite(x, f'DAT: the input images (shape {tuple(x.shape)}) hold NaN or Inf '
                          f'values')
        x, hw_shape = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)
                outs.append(token_map(out, hw_shape).contiguous())
        return tuple(outs)

    # ------------------------------------------------------------------ init / train modes
    def init_weights(self):
        super().init_weights()
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            return
        # the authors' initialisation: PyTorch defaults, trunc_normal(0.01) for bias tables
        for m in self.modules():
            if isinstance(m, WindowMSA):
                trunc_normal_(m.relative_position_bias_table, std=0.01)

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            for param in self.patch_embed.parameters():
                param.requires_grad = False
        for i in range(self.frozen_stages + 1):
            self.stages[i].eval()
            for param in self.stages[i].parameters():
                param.requires_grad = False
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                norm.eval()
                for param in norm.parameters():
                    param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                    m.eval()
        return self

    # ------------------------------------------------------------------ checkpoint loading
    def _resize_position_tables(self, state_dict, prefix, *args, **kwargs):
        """Load hook: fit window and deformable position tables of another size.

        Window tables ((2w-1)^2, M) are resized bicubically as in mmdet's Swin (e.g. 7 -> 12
        for the 384 model), their index buffers regenerated; deformable 'relative' tables
        (M, 2H0-1, 2W0-1) are resized bilinearly (align_corners, as they are sampled) and
        'fixed' biases (M, H0*W0, Hk0*Wk0) bilinearly along both grids.

        Checkpoints that cannot fit fail here with a ``RuntimeError`` rather than the warning
        of a non-strict load, with a message that says why: see :meth:`_check_checkpoint_keys`
        and :meth:`_check_checkpoint_fits`.
        """
        own = {k: v for k, v in self.state_dict(prefix=prefix, keep_vars=True).items()
               if not k.endswith('relative_position_index')}
        self._check_checkpoint_keys(state_dict, prefix, own)
        for name, module in self.named_modules():
            key = f'{prefix}{name}.'
            if isinstance(module, WindowMSA):
                table_key = key + 'relative_position_bias_table'
                if table_key not in state_dict:
                    continue
                src, dst = state_dict[table_key], module.relative_position_bias_table
                if src.shape != dst.shape and src.shape[1] == dst.shape[1]:
                    state_dict[table_key] = resize_window_bias_table(
                        src, int(round(dst.shape[0]**0.5)))
                # the index is derived from the window size: always our own
                state_dict[key + 'relative_position_index'] = module.relative_position_index
            elif isinstance(module, DeformableAttention) and isinstance(
                    module.rpe_table, nn.Parameter):
                table_key = key + 'rpe_table'
                if table_key not in state_dict:
                    continue
                src, dst = state_dict[table_key], module.rpe_table
                if src.dim() != dst.dim() or src.shape == dst.shape or src.shape[0] != dst.shape[0]:
                    continue
                if module.pos_encoding == 'relative':
                    state_dict[table_key] = resize_rpe_table(src, dst.shape[1:])
                else:
                    state_dict[table_key] = _resize_fixed_from_shape(module, src, dst)
        self._check_checkpoint_fits(state_dict, prefix, own)

    #: keys of the authors' DAT code (tools/model_converters/dat_to_mmdat.py converts them)
    _AUTHORS_KEYS = re.compile(
        r'(patch_proj|down_projs)\.\d|stages\.\d+\.(attns|mlps|layer_norms)\.')

    def _check_checkpoint_keys(self, state_dict, prefix, own):
        """Fail plainly on checkpoints holding none of DAT's keys under ``prefix`` but DAT's
        weights under other names: the authors' layout, another key prefix, or a state dict
        nested in an entry (such as the authors' ``{'model': state_dict}``)."""
        if not own or any(k in state_dict for k in own):
            return  # DAT's keys are there (or the state dict is not meant for DAT at all)
        # (where, keys): the top level, and state dicts nested in an entry
        groups = [('', list(state_dict))] + [
            (f' (nested under the entry {k!r})', [str(n) for n in v])
            for k, v in state_dict.items() if isinstance(v, Mapping)]
        for where, keys in groups:
            authors = [k for k in keys if self._AUTHORS_KEYS.match(k[len(prefix):] if
                                                                    k.startswith(prefix) else k)]
            if authors:
                raise RuntimeError(
                    f'DAT: the checkpoint is in the layout of the authors\' DAT code{where}, '
                    f'keys such as {authors[:3]}: convert it first with '
                    f'tools/model_converters/dat_to_mmdat.py SRC DST')
        local = {k[len(prefix):] for k in own}
        for where, keys in groups:
            for key in keys:
                for name in local:
                    if key == name or key.endswith('.' + name):
                        other = key[:-len(name)]
                        raise RuntimeError(
                            f'DAT: the checkpoint holds DAT\'s weights{where} under the key '
                            f'prefix {other!r} (e.g. {key!r}), the model expects {prefix!r}: '
                            f"load it with init_cfg=dict(type='Pretrained', checkpoint=..., "
                            f'prefix={other!r}) or convert it')

    def _check_checkpoint_fits(self, state_dict, prefix, own):
        """Fail on a checkpoint of another arch, naming what differs: the blocks per stage
        (e.g. DAT-S into DAT-T) and the tensors whose shapes differ and could not be resized
        (e.g. DAT-B into DAT-T)."""
        ours = list(self.arch_settings['depths'])
        block = re.compile(re.escape(prefix) + r'stages\.(\d+)\.blocks\.(\d+)\.')
        depths, extra = [0] * self.num_stages, set()
        for key in state_dict:
            m = block.match(key)
            if m and int(m[1]) < self.num_stages:
                i, j = int(m[1]), int(m[2])
                depths[i] = max(depths[i], j + 1)
                if j >= ours[i]:
                    extra.add((i, j))
        problems = []
        if any(depths) and depths != ours:
            extra = [f'{prefix}stages.{i}.blocks.{j}' for i, j in sorted(extra)]
            missing = [f'{prefix}stages.{i}.blocks.{j}' for i in range(self.num_stages)
                       for j in range(depths[i], ours[i])]
            problems.append(
                f'blocks per stage: checkpoint {depths} vs model {ours}; only in the '
                f'checkpoint: {extra[:6]}{" ..." if len(extra) > 6 else ""}, only in the '
                f'model: {missing[:6]}{" ..." if len(missing) > 6 else ""}')
        mismatched = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model '
                      f'{tuple(v.shape)}' for k, v in own.items()
                      if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
        if mismatched:
            more = f'\n    ... and {len(mismatched) - 10} more' if len(mismatched) > 10 else ''
            problems.append(f'{len(mismatched)} tensors of other shapes:\n    ' +
                            '\n    '.join(mismatched[:10]) + more)
        if problems:
            raise RuntimeError(
                f'DAT: the checkpoint does not fit this model (embed_dims '
                f'{list(self.arch_settings["embed_dims"])}, depths {ours}): a checkpoint of '
                f'another arch?\n  - ' + '\n  - '.join(problems))

def _resize_fixed_from_shape(module, src, dst):
    """Infer the square grids of a 'fixed' bias from its shape and resize it to ``dst``."""
    n_q, n_k = src.shape[1:]
    hq, hk = int(round(n_q**0.5)), int(round(n_k**0.5))
    H0, W0 = module.feat_size
    Hk0, Wk0 = module.key_grid_size(H0, W0)
    return resize_fixed_bias(src, (hq, n_q // hq, hk, n_k // hk), (H0, W0, Hk0, Wk0))


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
