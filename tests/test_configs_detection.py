"""The detection configs (``configs/detection``) against Tables 3 and 4 of the paper.

Every config is mapped to its row of ``paper_tables()`` (read, never copied) and checked:

* it builds through mmdet's registry, with the DAT backbone feeding the FPN the channels it
  expects, ImageNet weights loaded as its architecture file (configs/_base_/backbones) says;
* parameters within 1 M of the paper's (which prints whole millions) and FLOPs at 1280x800
  within 3 %, counted by :mod:`mmdat.utils.complexity` as mmdet's ``get_flops.py`` does.
  Counting FLOPs of a detector at 1280x800 takes ~0.5-1.5 min on a CPU: the DAT-T counts run
  by default (a 3x config has the model of its 1x sibling, counted once), DAT-S/DAT-B's are
  ``slow``;
* the training protocol is Swin's, as mmdet's own Swin configs state it (schedules, AdamW,
  no decay on norms and position tables, the 3x multi-scale + random-crop pipeline), and
  Cascade Mask R-CNN uses Swin's 4conv1fc GIoU box heads;
* ``configs/detection/metafile.yml`` carries the paper's APs and our measured counts;
* (the DAT++ configs, ``*_dat_pp_*``, are tested by tests/test_configs_dat_pp.py)
* one real short run per detector family: ``tools/train.py`` for two iterations on a
  generated COCO-format dataset, then ``tools/test.py`` on the checkpoint, which must print
  the COCO bbox (and segm) mAPs of mmdet's ``CocoMetric``. The Mask R-CNN run trains with
  ``frozen_stages`` and ``with_cp``; the frozen weights must come out of training unchanged.
"""
import functools
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import yaml
from mmengine.config import Config

from mmdat.datasets import CLASSES, make_detection
from mmdat.utils import paper_tables
from mmdat.utils.complexity import build_model, load_config, model_complexity

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG_DIR = osp.join(ROOT, 'configs', 'detection')

# ----------------------------------------------------------------------------------- mapping
#: config -> (table of paper_tables.yaml, backbone, schedule) of its row
CONFIGS = {
    'retinanet_dat_t_1x.py': ('table3_retinanet_coco', 'DAT-T', '1x'),
    'retinanet_dat_t_3x.py': ('table3_retinanet_coco', 'DAT-T', '3x'),
    'retinanet_dat_s_1x.py': ('table3_retinanet_coco', 'DAT-S', '1x'),
    'retinanet_dat_s_3x.py': ('table3_retinanet_coco', 'DAT-S', '3x'),
    'mask_rcnn_dat_t_1x.py': ('table4a_mask_rcnn_coco', 'DAT-T', '1x'),
    'mask_rcnn_dat_t_3x.py': ('table4a_mask_rcnn_coco', 'DAT-T', '3x'),
    'mask_rcnn_dat_s_1x.py': ('table4a_mask_rcnn_coco', 'DAT-S', '1x'),
    'mask_rcnn_dat_s_3x.py': ('table4a_mask_rcnn_coco', 'DAT-S', '3x'),
    'cascade_mask_rcnn_dat_t_1x.py': ('table4b_cascade_mask_rcnn_coco', 'DAT-T', '1x'),
    'cascade_mask_rcnn_dat_t_3x.py': ('table4b_cascade_mask_rcnn_coco', 'DAT-T', '3x'),
    'cascade_mask_rcnn_dat_s_3x.py': ('table4b_cascade_mask_rcnn_coco', 'DAT-S', '3x'),
    'cascade_mask_rcnn_dat_b_3x.py': ('table4b_cascade_mask_rcnn_coco', 'DAT-B', '3x'),
}
#: config name prefix -> (mmdet detector class, has masks)
FAMILIES = {
    'retinanet': ('RetinaNet', False),
    'mask_rcnn': ('MaskRCNN', True),
    'cascade_mask_rcnn': ('CascadeRCNN', True),
}
#: the protocol as mmdet's own Swin-T configs state it, per schedule
SWIN_1X = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
SWIN_3X = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
#: stochastic depth "as the Swin counterparts" in their detection configs: Swin-T/S as mmdet's
#: Swin configs (read); Swin-B 0.3 as Swin's own Cascade Mask R-CNN config (not in mmdet)
SWIN_DROP_PATH = {
    'DAT-T': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    'DAT-S': 'mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py',
    'DAT-B': 0.3,
}
#: no weight decay on these (substrings of DAT's parameter names): norms, window position
#: bias tables, deformable position tables, the offset network's LayerNorm
NO_DECAY = ('norm', 'relative_position_bias_table', 'rpe_table', 'conv_offset.1')
#: tolerances: the paper prints whole millions of params and whole GFLOPs
PARAMS_ABS = 1.0  # M
FLOPS_REL = 0.03


def family(config):
    return max((f for f in FAMILIES if config.startswith(f + '_dat')), key=len)


def paper_row(config):
    table, backbone, schedule = CONFIGS[config]
    rows = [r for r in paper_tables()[table]
            if r['backbone'] == backbone and r['schedule'] == schedule]
    assert len(rows) == 1, f'{config}: {len(rows)} rows of {table} match'
    return rows[0]


# ----------------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def load_cfg(config):
    return Config.fromfile(osp.join(CFG_DIR, config))


@functools.lru_cache(maxsize=None)
def summary(config):
    """What the tests need of a built model (not the model: 12 of them would not fit)."""
    torch.manual_seed(0)
    model = build_model(load_cfg(config))  # mmdet's registry, no pretrained weights
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 64, 96))
    return dict(
        type=type(model).__name__,
        backbone=type(model.backbone).__name__,
        params=sum(p.numel() for p in model.parameters()),
        out_channels=[f.shape[1] for f in feats],
        fpn_in_channels=list(model.neck.in_channels),
        param_names=[n for n, _ in model.named_parameters()])


def model_twin(config):
    """The first config with the same model (a 3x config's 1x sibling): counted once."""
    return next(c for c in CONFIGS if plain(load_cfg(c).model) == plain(load_cfg(config).model))


def complexity(config):
    return _complexity(model_twin(config))


@functools.lru_cache(maxsize=None)
def _complexity(config):
    return model_complexity(osp.join(CFG_DIR, config))


def plain(obj):
    """Config values without the ``_scope_`` keys mmengine adds to ``mmdet::`` bases."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def slow_unless_tiny(config):
    marks = [] if '_dat_t_' in config else [pytest.mark.slow]
    return pytest.param(config, marks=marks, id=config)


# ----------------------------------------------------------------------------------- configs
def test_every_config_is_mapped():
    on_disk = sorted(osp.basename(p) for p in glob.glob(osp.join(CFG_DIR, '*.py'))
                     if '_dat_pp_' not in p)
    assert on_disk == sorted(CONFIGS)
    tables = {t for t, _, _ in CONFIGS.values()}
    dat_rows = [(t, r['backbone'], r['schedule']) for t in tables for r in paper_tables()[t]
                if r['backbone'].startswith('DAT')]
    assert sorted(dat_rows) == sorted(CONFIGS.values())  # every DAT row has its config


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_with_mmdet(config):
    cfg = load_cfg(config)
    assert cfg.default_scope == 'mmdet'
    assert 'mmdat' in cfg.custom_imports['imports']  # mmdet's own tools need it
    assert cfg.custom_imports.get('allow_failed_imports') is False
    s = summary(config)
    assert s['type'] == FAMILIES[family(config)][0]
    assert s['backbone'] == 'DAT'
    size = CONFIGS[config][1][-1].lower()
    arch = {'t': 'tiny', 's': 'small', 'b': 'base'}[size]
    assert cfg.model.backbone.arch == arch
    # ImageNet weights of the same size, from the architecture file (configs/_base_/backbones)
    assert cfg.model.backbone.init_cfg == cfg.dat.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'checkpoints/dat_{size}_in1k_224.pth', prefix='backbone.')


@pytest.mark.parametrize('config', CONFIGS)
def test_backbone_feeds_fpn(config):
    s = summary(config)
    assert s['out_channels'] == s['fpn_in_channels']
    # RetinaNet takes stages 2-4 (FPN start_level 0, P6-P7 on the input), the others 1-4
    cfg = load_cfg(config)
    retina = family(config) == 'retinanet'
    assert tuple(cfg.model.backbone.out_indices) == ((1, 2, 3) if retina else (0, 1, 2, 3))
    assert cfg.model.neck.get('start_level', 0) == 0
    assert cfg.model.neck.num_outs == 5
    if retina:
        assert cfg.model.neck.add_extra_convs == 'on_input'


@pytest.mark.parametrize('config', CONFIGS)
def test_params_match_paper(config):
    ours, paper = summary(config)['params'] / 1e6, paper_row(config)['params']
    assert abs(ours - paper) <= PARAMS_ABS, f'{config}: {ours:.2f} M vs paper {paper} M'


@pytest.mark.parametrize('config', [slow_unless_tiny(c) for c in CONFIGS])
def test_flops_match_paper(config):
    res = complexity(config)
    assert res['shape'] == (800, 1280)
    ours, paper = res['flops'] / 1e9, paper_row(config)['flops']
    print(f'{config}: {res["params"] / 1e6:.2f} M params, {ours:.1f} GFLOPs '
          f'(paper {paper_row(config)["params"]} M, {paper} G)')
    assert ours == pytest.approx(paper, rel=FLOPS_REL), f'{config}: {ours:.1f} G vs {paper} G'
    meta = metafile_models()[osp.splitext(config)[0]]['Metadata']
    assert meta['FLOPs'] == pytest.approx(res['flops'], rel=1e-3)


@pytest.mark.parametrize('config', [c for c in CONFIGS if c.endswith('_3x.py')])
def test_3x_model_is_1x_model(config):
    """Tables 3-4 give one FLOPs/params figure per backbone for both schedules."""
    sibling = config.replace('_3x.py', '_1x.py')
    if sibling in CONFIGS:
        assert plain(load_cfg(config).model) == plain(load_cfg(sibling).model)


@pytest.mark.parametrize('config', CONFIGS)
def test_drop_path_as_swin_counterpart(config):
    swin = SWIN_DROP_PATH[CONFIGS[config][1]]
    if isinstance(swin, str):
        swin = load_config(swin).model.backbone.drop_path_rate
    assert load_cfg(config).model.backbone.drop_path_rate == swin


@pytest.mark.parametrize('config', CONFIGS)
def test_swin_protocol(config):
    cfg = load_cfg(config)
    schedule = CONFIGS[config][2]
    swin = load_config(SWIN_1X if schedule == '1x' else SWIN_3X)
    epochs = {'1x': 12, '3x': 36}[schedule]
    assert cfg.train_cfg.max_epochs == swin.train_cfg.max_epochs == epochs
    assert plain(cfg.param_scheduler) == plain(swin.param_scheduler)
    # AdamW, lr 1e-4, betas (0.9, 0.999), weight decay 0.05
    assert plain(cfg.optim_wrapper.optimizer) == plain(swin.optim_wrapper.optimizer)
    custom = cfg.optim_wrapper.paramwise_cfg.custom_keys
    names = summary(config)['param_names']
    for key in NO_DECAY:
        assert plain(custom[key]) == dict(decay_mult=0.), key
        assert any(key in n for n in names), f'{key!r} matches no parameter'
    # total batch 16 (8 GPUs x 2), lr scaled with it when training with another batch
    assert cfg.train_dataloader.batch_size == swin.train_dataloader.batch_size == 2
    assert plain(cfg.auto_scale_lr) == dict(enable=True, base_batch_size=16)
    # 1x: mmdet's single-scale COCO pipeline; 3x: Swin's multi-scale + random-crop one
    expected = swin.train_dataloader.dataset.pipeline
    if family(config) == 'retinanet':  # boxes only
        expected = [dict(t, with_mask=False) if t['type'] == 'LoadAnnotations' else t
                    for t in expected]
    pipeline = [dict(t, with_mask=t.get('with_mask', False))
                if t['type'] == 'LoadAnnotations' else t
                for t in cfg.train_dataloader.dataset.pipeline]
    assert plain(pipeline) == plain(expected)


@pytest.mark.parametrize('config', [c for c in CONFIGS if c.startswith('cascade')])
def test_cascade_uses_swin_4conv1fc_giou_heads(config):
    heads = load_cfg(config).model.roi_head.bbox_head
    assert len(heads) == 3
    stds = [h.bbox_coder.target_stds for h in heads]
    assert stds == [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
    for head in heads:
        assert head.type == 'Shared4Conv1FCBBoxHead'
        assert plain(head.loss_bbox) == dict(type='GIoULoss', loss_weight=10.0)
        assert head.reg_decoded_bbox and not head.reg_class_agnostic
        assert plain(head.norm_cfg) == dict(type='SyncBN', requires_grad=True)


# ----------------------------------------------------------------------------------- metafile
@functools.lru_cache(maxsize=None)
def metafile_models():
    with open(osp.join(CFG_DIR, 'metafile.yml')) as f:
        return {m['Name']: m for m in yaml.safe_load(f)['Models']}


def test_metafile_lists_every_config_in_model_index():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        assert 'configs/detection/metafile.yml' in yaml.safe_load(f)['Import']
    models = metafile_models()
    assert sorted(m['Config'] for m in models.values() if m['In Collection'] == 'DAT') == sorted(
        f'configs/detection/{c}' for c in CONFIGS)


@pytest.mark.parametrize('config', CONFIGS)
def test_metafile_entry(config):
    entry = metafile_models()[osp.splitext(config)[0]]
    assert entry['Config'] == f'configs/detection/{config}'
    assert entry['Metadata']['Parameters'] == summary(config)['params']
    assert entry['Metadata']['Epochs'] == load_cfg(config).train_cfg.max_epochs
    row = paper_row(config)
    metrics = {r['Task']: r['Metrics'] for r in entry['Results']}
    if family(config) == 'retinanet':
        assert metrics == {'Object Detection': {'box AP': row['AP'][0]}}
    else:
        assert metrics == {'Object Detection': {'box AP': row['APb']},
                           'Instance Segmentation': {'mask AP': row['APm']}}


# ----------------------------------------------------------------------------------- short runs
#: one config per family, each trained/tested on the generated data
SHORT_RUNS = ['retinanet_dat_t_1x.py', 'mask_rcnn_dat_t_1x.py', 'cascade_mask_rcnn_dat_t_1x.py']
SCALE = (128, 96)  # (w, h) of the generated images: the resize keeps them as they are


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return make_detection(str(tmp_path_factory.mktemp('coco')), num_train=4, num_val=2,
                          size=SCALE[::-1], seed=0)


def short_run_options(config, data_root):
    """``--cfg-options`` of a short CPU run: the generated data (3 classes) at its own size,
    1 epoch of 2 iterations (batch 2), no pretrained weights, no validation, no workers."""
    opts = {'model.backbone.init_cfg': None, 'train_cfg.max_epochs': 1,
            'val_dataloader': None, 'val_cfg': None, 'val_evaluator': None,
            'default_hooks.logger.interval': 1,
            'test_evaluator.ann_file': osp.join(data_root, 'annotations/instances_val.json')}
    for split, loader, resize in (('train', 'train_dataloader', 2),
                                  ('val', 'test_dataloader', 1)):
        opts.update({
            f'{loader}.num_workers': 0, f'{loader}.persistent_workers': False,
            f'{loader}.dataset.data_root': data_root,
            f'{loader}.dataset.ann_file': f'annotations/instances_{split}.json',
            f'{loader}.dataset.data_prefix.img': f'{split}/',
            f'{loader}.dataset.metainfo.classes': list(CLASSES),
            f'{loader}.dataset.pipeline.{resize}.scale': SCALE})
    fam, n = family(config), len(CLASSES)
    if fam == 'retinanet':
        opts['model.bbox_head.num_classes'] = n
        opts['model.test_cfg.score_thr'] = 0.  # an untrained RetinaNet scores below 0.05
    elif fam == 'mask_rcnn':
        opts['model.roi_head.bbox_head.num_classes'] = n
        opts['model.roi_head.mask_head.num_classes'] = n
    else:
        opts.update({f'model.roi_head.bbox_head.{i}.num_classes': n for i in range(3)})
        opts['model.roi_head.mask_head.num_classes'] = n
    if fam != 'retinanet':
        # 64 proposals and 32 sampled RoIs (not 1000 / 512): the RoI heads (Cascade's
        # 4conv1fc ones above all) would otherwise dominate the run on a CPU
        opts.update({'model.train_cfg.rpn_proposal.max_per_img': 64,
                     'model.test_cfg.rpn.nms_pre': 64, 'model.test_cfg.rpn.max_per_img': 64})
        stages = [''] if fam == 'mask_rcnn' else [f'.{i}' for i in range(3)]
        opts.update({f'model.train_cfg.rcnn{s}.sampler.num': 32 for s in stages})
    return opts


def cli(opts):
    """``--cfg-options`` arguments (mmengine's DictAction syntax)."""
    def fmt(v):
        if isinstance(v, (list, tuple)):
            inner = ','.join(str(x) for x in v)
            return f'[{inner}]' if isinstance(v, list) else f'({inner})'
        return str(v)
    return ['--cfg-options'] + [f'{k}={fmt(v)}' for k, v in opts.items()]


def run_tool(*args):
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'OMP_NUM_THREADS': '2'})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{args[0]} failed:\n{out[-6000:]}'
    return out


@pytest.mark.parametrize('config', SHORT_RUNS)
def test_short_train_then_test(config, coco_root, tmp_path):
    cfg_file = osp.join(CFG_DIR, config)
    opts = short_run_options(config, coco_root)
    frozen = family(config) == 'mask_rcnn'
    init = None
    if frozen:
        # frozen stem and stages 1-2, activation checkpointing; start from saved weights
        # so that the frozen ones can be compared after training
        opts.update({'model.backbone.frozen_stages': 1, 'model.backbone.with_cp': True})
        cfg = load_config(cfg_file, opts)
        torch.manual_seed(0)
        model = build_model(cfg).train()
        model.init_weights()
        init = {k: v.clone() for k, v in model.state_dict().items()}
        frozen_keys = [n for n, p in model.named_parameters() if not p.requires_grad]
        trained_keys = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
        assert frozen_keys and all(k.startswith('backbone.') for k in frozen_keys)
        opts['load_from'] = str(tmp_path / 'init.pth')
        torch.save(dict(state_dict=init), opts['load_from'])

    work_dir = tmp_path / 'work'
    out = run_tool('tools/train.py', cfg_file, '--work-dir', str(work_dir), *cli(opts))
    assert re.search(r'Epoch\(train\) +\[1\]\[2/2\].*loss: [\d.]+', out), out[-3000:]
    ckpt = work_dir / 'epoch_1.pth'
    assert ckpt.is_file()
    if frozen:
        state = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
        for k in frozen_keys:
            assert torch.equal(state[k], init[k]), f'frozen {k} changed in training'
        assert any(not torch.equal(state['backbone.' + k], init['backbone.' + k])
                   for k in trained_keys), 'no trainable backbone weight was updated'

    test_opts = {k: v for k, v in opts.items() if k != 'load_from'}
    out = run_tool('tools/test.py', cfg_file, str(ckpt), '--work-dir', str(tmp_path / 'test'),
                   *cli(test_opts))
    metrics = ['bbox'] + (['segm'] if FAMILIES[family(config)][1] else [])
    for m in metrics:
        assert re.search(rf'coco/{m}_mAP: [\d.]+ +coco/{m}_mAP_50: [\d.]+', out), out[-3000:]
