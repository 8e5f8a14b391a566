"""Every table of the DAT paper (2-9) as rows of our configs' params/FLOPs next to the paper's,
with the Swin baselines counted by the same counter (:func:`~.complexity.model_complexity`)
from the toolboxes' own configs, and the DAT++ models (``pp-*`` tables: every released model,
next to the few figures available for them, ``paper_tables_pp.yaml``). Used by
``tools/analysis/get_flops.py --paper``.

Where a toolbox ships no config for a baseline of the paper, the nearest one is adapted and
the row says how: RetinaNet Swin-S is mmdet's RetinaNet Swin-T config with Swin-S's depths;
the Cascade Mask R-CNN Swin rows are our Cascade Mask R-CNN config with its backbone replaced
by mmdet's ``SwinTransformer`` as mmdet's Mask R-CNN Swin-T config defines it (Swin-S/B
depths/widths per the Swin paper).

A row the paper's own figures put out of reach (:data:`~.paper.UNREACHABLE_FLOPS`) carries
that record as ``unreachable``.
"""
import os.path as osp
from dataclasses import dataclass, field

from .complexity import load_config, model_complexity, paper_shape
from .paper import UNREACHABLE_FLOPS, Unreachable, paper_tables, paper_tables_pp

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'configs')

#: the Swin paper's variants: (embed_dims, depths, num_heads)
SWIN_ARCHS = {
    'Swin-T': (96, [2, 2, 6, 2], [3, 6, 12, 24]),
    'Swin-S': (96, [2, 2, 18, 2], [3, 6, 12, 24]),
    'Swin-B': (128, [2, 2, 18, 2], [4, 8, 16, 32]),
}
SWIN_CLS = {
    ('Swin-T', 224): 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
    ('Swin-S', 224): 'mmpretrain::swin_transformer/swin-small_16xb64_in1k.py',
    ('Swin-B', 224): 'mmpretrain::swin_transformer/swin-base_16xb64_in1k.py',
    ('Swin-B', 384): 'mmpretrain::swin_transformer/swin-base_16xb64_in1k-384px.py',
}
SWIN_SEG = {
    f'Swin-{s}': f'mmseg::swin/swin-{n}-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-'
                 '512x512.py' for s, n in (('T', 'tiny'), ('S', 'small'), ('B', 'base'))
}
MMDET_SWIN_T = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'


@dataclass
class Row:
    """One row: ``label`` in ``table``; ``config`` (+ ``overrides``) that we count;
    ``paper`` the paper's ``{'params': M, 'flops': G}`` (or None); ``note`` how a baseline
    was adapted; ``unreachable`` the record of a row whose FLOPs the paper's own figures put
    out of reach (None for the others)."""
    table: str
    label: str
    config: str
    overrides: dict = field(default_factory=dict)
    paper: dict = None
    note: str = ''
    baseline: bool = False
    unreachable: Unreachable = None


def _cfg(*parts):
    return osp.join(CONFIGS, *parts)


def _swin_backbone(name):
    """mmdet's SwinTransformer as its Mask R-CNN Swin-T config builds it, sized as ``name``."""
    backbone = dict(load_config(MMDET_SWIN_T).model.backbone)
    dims, depths, heads = SWIN_ARCHS[name]
    backbone.update(_delete_=True, embed_dims=dims, depths=depths, num_heads=heads,
                    init_cfg=None)
    return backbone


def _size(backbone):
    return backbone.split('-')[1].lower()  # 'DAT-T' -> 't'


def _classification(table, row):
    res = row.get('res', 224)
    model = row['model']
    paper = dict(params=row['params'], flops=row['flops'])
    if model.startswith('Swin'):
        return Row(table, f'{model} {res}', SWIN_CLS[(model, res)], paper=paper, baseline=True)
    suffix = '_384' if res == 384 else ''
    return Row(table, f'{model} {res}', _cfg('classification', f'dat_{_size(model)}_in1k'
                                             f'{suffix}.py'), paper=paper)


def _detection(family, table, row):
    backbone, schedule = row['backbone'], row['schedule']
    paper = dict(params=row['params'], flops=row['flops'])
    label = f'{backbone} {schedule}'
    if backbone.startswith('DAT'):
        return Row(table, label, _cfg('detection', f'{family}_dat_{_size(backbone)}_'
                                      f'{schedule}.py'), paper=paper)
    if family == 'retinanet':
        overrides = {}
        note = ''
        if backbone != 'Swin-T':
            dims, depths, heads = SWIN_ARCHS[backbone]
            overrides = {'model.backbone.depths': depths, 'model.backbone.num_heads': heads,
                         'model.backbone.embed_dims': dims}
            note = f'mmdet RetinaNet Swin-T config, {backbone} sizes'
        return Row(table, label, 'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py',
                   overrides, paper, note, True)
    if family == 'mask_rcnn':
        config = {'Swin-T': MMDET_SWIN_T,
                  'Swin-S': 'mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py'}
        return Row(table, label, config[backbone], paper=paper, baseline=True)
    # cascade: mmdet has no Swin config; ours with mmdet's SwinTransformer
    size = 'b' if backbone == 'Swin-B' else 't'
    return Row(table, label, _cfg('detection', f'cascade_mask_rcnn_dat_{size}_3x.py'),
               {'model.backbone': _swin_backbone(backbone)}, paper,
               f'our Cascade Mask R-CNN config, mmdet SwinTransformer ({backbone})', True)


def _segmentation(table, row):
    backbone, head = row['backbone'], row['head']
    paper = dict(params=row['params'], flops=row['flops'])
    label = f'{head} {backbone}'
    if backbone.startswith('Swin'):
        return Row(table, label, SWIN_SEG[backbone], paper=paper, baseline=True)
    name = 'semantic_fpn_dat_{}_40k.py' if head == 'SemanticFPN' else 'upernet_dat_{}_160k.py'
    return Row(table, label, _cfg('segmentation', name.format(_size(backbone))), paper=paper)


#: Table 6 row (stages 1-2 attention, offsets, position embedding) -> config
TABLE6 = {
    ('S', False, 'none'): 'ablations/dat_t_no_offset_no_pe.py',
    ('S', False, 'relative'): 'ablations/dat_t_no_offset_rpe.py',
    ('S', True, 'none'): 'ablations/dat_t_offset_no_pe.py',
    ('S', True, 'fixed'): 'ablations/dat_t_offset_fixed_pe.py',
    ('S', True, 'dwconv'): 'ablations/dat_t_offset_dwconv_pe.py',
    ('P', True, 'relative'): 'ablations/dat_t_pvt_stages12.py',
    ('S', True, 'relative'): 'dat_t_in1k.py',
}
#: Table 7 row (stages with deformable attention) -> config
TABLE7 = {
    (1, 2, 3, 4): 'ablations/dat_t_deform_stages_1234.py',
    (2, 3, 4): 'ablations/dat_t_deform_stages_234.py',
    (3, 4): 'dat_t_in1k.py',
    (4, ): 'ablations/dat_t_deform_stages_4.py',
    (): 'ablations/dat_t_deform_stages_none.py',
}
TABLE8 = {
    'ddetr_16_keys': 'ablations/dat_t_ddetr_attn_16keys.py',
    'ddetr_same_keys': 'ablations/dat_t_ddetr_attn_same_keys.py',
    'dat': 'dat_t_in1k.py',
}
TABLE9 = {
    'dat_t_conv_stem': 'dat_t_conv_stem_in1k.py',
    'dat_s_conv_stem': 'dat_s_conv_stem_in1k.py',
    'dat_b_conv_stem': 'dat_b_conv_stem_in1k.py',
}
#: ``--tables`` names -> keys of ``paper_tables()``
TABLES = {
    '2': 'table2_imagenet', '3': 'table3_retinanet_coco', '4a': 'table4a_mask_rcnn_coco',
    '4b': 'table4b_cascade_mask_rcnn_coco', '5': 'table5_ade20k',
    '6': 'table6_ablation_geometry', '7': 'table7_ablation_stages',
    '8': 'table8_deformable_detr_attention', '9': 'table9_conv_patch_embedding',
}
#: ``--tables`` names -> keys of ``paper_tables_pp()`` (DAT++; ``pp`` picks them all)
TABLES_PP = {
    'pp-in1k': 'pp_imagenet', 'pp-retinanet': 'pp_retinanet_coco',
    'pp-mask': 'pp_mask_rcnn_coco', 'pp-cascade': 'pp_cascade_mask_rcnn_coco',
    'pp-ade20k': 'pp_ade20k',
}
#: the DAT++ detectors' config names
_PP_DET = {'pp-retinanet': 'retinanet', 'pp-mask': 'mask_rcnn', 'pp-cascade': 'cascade_mask_rcnn'}


def _note_pp(row):
    """Where a DAT++ row's paper figures come from, when not from the authors."""
    if row.get('flops') is None:
        return ''
    src = [s for s in ([row['src']] if isinstance(row['src'], str) else row['src'])
           if s in ('pwc', 'cited')]
    return f'paper figures: {"/".join(src)}, unverified' if src else ''


def _dat_pp(key, table, row):
    """The :class:`Row` of a DAT++ model (``paper_tables_pp()`` row) and its config."""
    paper = dict(params=row['params'], flops=row['flops'])
    if key == 'pp-in1k':
        size = _size(row['model'].rstrip('+'))
        suffix = '_384' if row['res'] == 384 else ''
        return Row(table, f'{row["model"]} {row["res"]}',
                   _cfg('classification', f'dat_pp_{size}_in1k{suffix}.py'), paper=paper,
                   note=_note_pp(row))
    size = _size(row['backbone'].rstrip('+'))
    if key == 'pp-ade20k':
        name = ('semantic_fpn_dat_pp_{}_80k.py' if row['head'] == 'SemanticFPN' else
                'upernet_dat_pp_{}_160k.py').format(size)
        return Row(table, f'{row["head"]} {row["backbone"]}', _cfg('segmentation', name),
                   paper=paper, note=_note_pp(row))
    return Row(table, f'{row["backbone"]} {row["schedule"]}',
               _cfg('detection', f'{_PP_DET[key]}_dat_pp_{size}_{row["schedule"]}.py'),
               paper=paper, note=_note_pp(row))


def paper_rows(tables=None):
    """The :class:`Row` s of the chosen tables (``'2'``, ``'4a'``, ``'4'`` = 4a + 4b, ...;
    DAT++: ``'pp-in1k'``, ..., ``'pp'`` = all of them; all tables when None), in the paper's
    order."""
    chosen = list(TABLES) + list(TABLES_PP) if not tables else []
    for t in tables or ():
        t = str(t)
        keys = [k for k in TABLES if k == t or (k[:-1] == t and k[-1] in 'ab')]
        keys += [k for k in TABLES_PP if k == t or t == 'pp']
        if not keys:
            raise ValueError(f'unknown table {t!r}; choose from '
                             f'{sorted(TABLES) + sorted(TABLES_PP)} (or 4, pp)')
        chosen += keys
    data = paper_tables()
    rows = []
    for t in chosen:
        if t in TABLES_PP:
            table = TABLES_PP[t]
            rows += [_dat_pp(t, table, r) for r in paper_tables_pp()[table]]
            continue
        table = TABLES[t]
        entries = data[table]
        if t == '2':
            rows += [_classification(table, r) for r in entries]
        elif t in ('3', '4a', '4b'):
            family = {'3': 'retinanet', '4a': 'mask_rcnn', '4b': 'cascade_mask_rcnn'}[t]
            rows += [_detection(family, table, r) for r in entries]
        elif t == '5':
            rows += [_segmentation(table, r) for r in entries]
        elif t == '6':
            for r in entries:
                key = (r['stages12'], r['offsets'], r['pos_embed'])
                rows.append(Row(table, f'stages 1-2 {key[0]}, offsets {key[1]}, '
                                f'pos {key[2]}', _cfg('classification', TABLE6[key]),
                                paper=dict(params=r['params'], flops=r['flops'])))
        elif t == '7':
            for r in entries:
                key = tuple(r['deformable_stages'])
                rows.append(Row(table, f'deformable stages {list(key)}',
                                _cfg('classification', TABLE7[key]),
                                paper=dict(params=r['params'], flops=r['flops'])))
        else:  # 8, 9: variants only, no figures in the paper's text
            mapping = TABLE8 if t == '8' else TABLE9
            assert list(mapping) == entries['variants'], (table, entries['variants'])
            rows += [Row(table, v, _cfg('classification', mapping[v])) for v in mapping]
    for row in rows:
        if not row.baseline and osp.isabs(row.config):
            record = UNREACHABLE_FLOPS.get(osp.relpath(row.config, REPO))
            if record is not None and record.table == row.table:
                row.unreachable = record
    return rows


def count_rows(rows, callback=None):
    """:func:`model_complexity` of each row (models counted once when rows share one at
    test time, e.g. 1x and 3x configs with different stochastic depths). ``callback(row,
    result)`` after each. Returns the results."""
    cache, results = {}, []
    for row in rows:
        cfg = load_config(row.config, row.overrides)
        model = cfg.model.to_dict()
        for train_only in ('drop_path_rate', 'with_cp'):  # the same model at test time
            model.get('backbone', {}).pop(train_only, None)
        key = (cfg.default_scope, repr(model), repr(paper_shape(cfg)))
        if key not in cache:
            cache[key] = model_complexity(cfg)
        results.append(cache[key])
        if callback is not None:
            callback(row, cache[key])
    return results


__all__ = ['Row', 'TABLES', 'TABLES_PP', 'paper_rows', 'count_rows']
