"""The DAT++ configs: every model the authors released, as their configs and READMEs give it.

Each config under ``configs/{classification,detection,segmentation}`` named ``*dat_pp_*`` is
mapped to its row of ``paper_tables_pp()`` (``mmdat/data/paper_tables_pp.yaml``: the authors'
README results, their per-config protocol from dat_pp_reference_numerics.md section 6) and
checked:

* it builds through its toolbox's registry; parameters: the classifiers' 23.96 / 53.13 /
  93.69 M, the dense backbones the same backbone with their output norms; FLOPs of the
  classifiers next to the figures quoted for the paper (the dense models' are counted in the
  ``slow`` tests and in the metafiles, ``tools/analysis/get_flops.py``);
* the protocol: optimizer, the effective lr at the authors' batch, weight decay and the exact
  set of parameters without it (the authors' rule applied to the authors' parameter names,
  mapped with the converter), schedule, warm-up, drop path, mixed precision, activation
  checkpointing, augmentation, test pipeline;
* the structure the released checkpoints have: a checkpoint in the authors' layout
  (dat_pp_reference_numerics.md 5.1 / 5.2; random values) converts with
  ``tools/model_converters/dat_to_mmdat.py --config`` and loads strictly, and the toolbox's own
  ``tools/test.py`` (``<package>/.mim/tools/test.py``) evaluates it on generated data;
* a short real training run (``tools/train.py``, DAT-nano++ for speed) then ``tools/test.py``
  on its checkpoint, per family;
* ``metafile.yml`` entries: the authors' results, our measured params/FLOPs.
"""
import functools
import glob
import importlib
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import yaml
from mmengine.optim import build_optim_wrapper

from mmdat.datasets import make_classification, make_detection, make_segmentation
from mmdat.datasets.synthetic import CLASSES
from mmdat.utils import paper_tables_pp
from mmdat.utils.complexity import build_model, load_config, model_complexity

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')
PP = paper_tables_pp()
PROTO = PP['training_protocols']
SIZES = {'t': 'DAT-T++', 's': 'DAT-S++', 'b': 'DAT-B++'}
ARCH = {'t': 'tiny++', 's': 'small++', 'b': 'base++'}
DIMS = {'t': 64, 's': 96, 'b': 128}  # C of stage 1; stage i has 2^i C
#: the classifiers' parameters with a 1000-class head (the DAT++ backbone issue's figures)
CLS_PARAMS = {'t': 23.96e6, 's': 53.13e6, 'b': 93.69e6}

# ----------------------------------------------------------------------------------- mapping
#: config (relative to configs/) -> (table of paper_tables_pp.yaml, the fields of its row)
MAPPING = {
    'classification/dat_pp_t_in1k.py': ('pp_imagenet', dict(model='DAT-T++', res=224)),
    'classification/dat_pp_s_in1k.py': ('pp_imagenet', dict(model='DAT-S++', res=224)),
    'classification/dat_pp_b_in1k.py': ('pp_imagenet', dict(model='DAT-B++', res=224)),
    'classification/dat_pp_b_in1k_384.py': ('pp_imagenet', dict(model='DAT-B++', res=384)),
}
DET_TABLES = {'retinanet': 'pp_retinanet_coco', 'mask_rcnn': 'pp_mask_rcnn_coco',
              'cascade_mask_rcnn': 'pp_cascade_mask_rcnn_coco'}
for _name in PROTO['coco']['configs']:
    _family, _size, _schedule = re.match(r'(.+)_dat_pp_(\w)_(\dx)$', _name).groups()
    MAPPING[f'detection/{_name}.py'] = (DET_TABLES[_family],
                                        dict(backbone=SIZES[_size], schedule=_schedule))
for _size in 'tsb':
    MAPPING[f'segmentation/semantic_fpn_dat_pp_{_size}_80k.py'] = (
        'pp_ade20k', dict(backbone=SIZES[_size], head='SemanticFPN'))
    MAPPING[f'segmentation/upernet_dat_pp_{_size}_160k.py'] = (
        'pp_ade20k', dict(backbone=SIZES[_size], head='UperNet'))


def size_of(config):
    return re.search(r'dat_pp_(\w)_', config).group(1)


def family(config):
    name = osp.basename(config)
    return next(f for f in ('cascade_mask_rcnn', 'mask_rcnn', 'retinanet', 'semantic_fpn',
                            'upernet', 'dat_pp') if name.startswith(f))


def paper_row(config):
    table, fields = MAPPING[config]
    rows = [r for r in PP[table] if all(r.get(k) == v for k, v in fields.items())]
    assert len(rows) == 1, f'{config}: {len(rows)} rows of {table} match {fields}'
    return rows[0]


def slow_unless_tiny(configs):
    return [pytest.param(c, id=c, marks=[] if size_of(c) == 't' else [pytest.mark.slow])
            for c in configs]


#: one config of each family: the strict-load, tools/test.py and training runs
FAMILIES = {
    'classification': 'classification/dat_pp_t_in1k.py',
    'retinanet': 'detection/retinanet_dat_pp_t_1x.py',
    'mask_rcnn': 'detection/mask_rcnn_dat_pp_t_1x.py',
    'cascade_mask_rcnn': 'detection/cascade_mask_rcnn_dat_pp_t_1x.py',
    'semantic_fpn': 'segmentation/semantic_fpn_dat_pp_t_80k.py',
    'upernet': 'segmentation/upernet_dat_pp_t_160k.py',
}


# ----------------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def load_cfg(config):
    return load_config(osp.join(CONFIGS, config))


@functools.lru_cache(maxsize=None)
def summary(config):
    """What the tests need of a built model (not the model: 22 of them would not fit)."""
    torch.manual_seed(0)
    model = build_model(load_cfg(config))
    norms = {n for n, _ in model.backbone.named_children() if re.fullmatch(r'norm\d', n)}
    neck = getattr(model, 'neck', None)
    return dict(
        type=type(model).__name__,
        params=sum(p.numel() for p in model.parameters()),
        backbone_params=sum(p.numel() for p in model.backbone.parameters()),
        backbone_norms=sorted(norms),
        neck_in=list(neck.in_channels) if hasattr(neck, 'in_channels') else None,
        no_decay=no_decay_params(model, load_cfg(config)))


def no_decay_params(model, cfg):
    """Names of the parameters the config's optimizer does not decay (mmengine's constructor;
    the AMP wrapper, which needs a GPU, swapped for the plain one: same parameter groups)."""
    wrapper = dict(cfg.optim_wrapper.to_dict(), type='OptimWrapper')
    wrapper.pop('loss_scale', None)
    optimizer = build_optim_wrapper(model, wrapper).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    return sorted(names[id(p)] for g in optimizer.param_groups for p in g['params']
                  if g['weight_decay'] == 0)


def converter():
    from test_converter import _converter
    return _converter()


def authors_names(dense_norms):
    """mmdat's DAT-T++ backbone parameter name -> (the authors' name, its shape)."""
    from test_converter import authors_dat_pp_state_dict
    conv = converter()
    mapping = {}
    for key, value in authors_dat_pp_state_dict(dense_norms=dense_norms).items():
        if key.startswith('cls_head.'):
            continue  # the classifier's head: head.fc
        new = conv._rename(key, False, True)
        assert new is not None, key
        mapping[new] = (key, tuple(value.shape))
    return mapping


# ----------------------------------------------------------------------------------- configs
def test_every_config_is_mapped():
    on_disk = sorted(osp.relpath(p, CONFIGS) for d in ('classification', 'detection',
                                                      'segmentation')
                     for p in glob.glob(osp.join(CONFIGS, d, '*dat_pp_*.py')))
    assert on_disk == sorted(MAPPING)
    for table in ('pp_imagenet', 'pp_retinanet_coco', 'pp_mask_rcnn_coco',
                  'pp_cascade_mask_rcnn_coco', 'pp_ade20k'):
        mapped = [fields for t, fields in MAPPING.values() if t == table]
        assert len(mapped) == len(PP[table]), table  # every released model has its config
    for config in MAPPING:
        paper_row(config)


@pytest.mark.parametrize('config', slow_unless_tiny(MAPPING))
def test_config_builds(config):
    cfg, s, size = load_cfg(config), summary(config), size_of(config)
    assert 'mmdat' in cfg.custom_imports['imports'] and not cfg.custom_imports.allow_failed_imports
    assert [h.type for h in cfg.custom_hooks] == ['ResumableRandomnessHook']
    task = config.split('/')[0]
    assert cfg.default_scope == {'classification': 'mmpretrain', 'detection': 'mmdet',
                                 'segmentation': 'mmseg'}[task]
    expected = {'dat_pp': 'ImageClassifier', 'retinanet': 'RetinaNet', 'mask_rcnn': 'MaskRCNN',
                'cascade_mask_rcnn': 'CascadeRCNN', 'semantic_fpn': 'EncoderDecoder',
                'upernet': 'EncoderDecoder'}[family(config)]
    assert s['type'] == expected
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.img_size) == ('DAT', ARCH[size], 224)
    C = DIMS[size]
    dims = [C, 2 * C, 4 * C, 8 * C]
    # the classifier's backbone with the dense models' output norms instead of its last one
    norm_params = {f'norm{i}': 2 * dims[i] for i in range(4)}
    if task == 'classification':
        assert s['params'] == pytest.approx(CLS_PARAMS[size], abs=5e3)
        assert s['backbone_norms'] == ['norm3']
        assert s['params'] - s['backbone_params'] == dims[3] * 1000 + 1000  # the head
    else:
        cls = CLS_PARAMS[size] - dims[3] * 1000 - 1000 - norm_params['norm3']
        out = [i for i in range(4) if f'norm{i}' in s['backbone_norms']]
        assert s['backbone_params'] == pytest.approx(
            cls + sum(norm_params[f'norm{i}'] for i in out), abs=5e3)
        assert tuple(backbone.out_indices) == tuple(out)
        assert out == ([1, 2, 3] if family(config) == 'retinanet' else [0, 1, 2, 3])
        # ImageNet weights of the same size, from its architecture file (one place)
        assert backbone.init_cfg == dict(type='Pretrained', prefix='backbone.',
                                         checkpoint=f'checkpoints/dat_pp_{size}_in1k_224.pth')
        assert cfg.dat.backbone.init_cfg == backbone.init_cfg
        if s['neck_in'] is not None:  # the FPN takes what the backbone returns
            assert s['neck_in'] == [dims[i] for i in out]
        else:
            assert cfg.model.decode_head.in_channels == dims
            assert cfg.model.auxiliary_head.in_channels == dims[2]


# ----------------------------------------------------------------------------------- protocols
def effective_lr(cfg, total_batch):
    """The lr at a total batch, as mmengine's auto_scale_lr scales it."""
    lr = cfg.optim_wrapper.optimizer.lr
    scale = cfg.get('auto_scale_lr', {})
    assert scale.get('enable'), 'the lr is per a batch: auto_scale_lr must be enabled'
    return lr * total_batch / scale['base_batch_size']


@pytest.mark.parametrize('config', [c for c in MAPPING if c.startswith('classification')])
def test_imagenet_protocol(config):
    """dat_pp_reference_numerics.md 6.1; the 384 fine-tune: paper_tables_pp's
    imagenet_384_finetune."""
    cfg, size = load_cfg(config), size_of(config)
    proto = PROTO['imagenet']
    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper' and optim.clip_grad.max_norm == proto['grad_clip']
    assert optim.optimizer.type == 'AdamW' and optim.optimizer.betas == (0.9, 0.999)
    paramwise = optim.paramwise_cfg
    assert paramwise.flat_decay_mult == paramwise.bias_decay_mult == 0
    assert paramwise.custom_keys['.rpe_table'].decay_mult == 0
    assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
    assert [a.alpha for a in cfg.model.train_cfg.augments] == [proto['mixup'], proto['cutmix']]
    assert cfg.model.head.loss.label_smooth_val == proto['label_smoothing']
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandAugment'].magnitude_level == 9 and train['RandAugment'].magnitude_std == 0.5
    assert train['RandomErasing'].erase_prob == proto['random_erasing']
    test = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    if config.endswith('_384.py'):
        ft = PROTO['imagenet_384_finetune']
        batch = ft['batch_per_gpu']
        assert cfg.model.backbone.img_size == ft['img_size']  # built at 224, fed 384
        assert train['RandomResizedCrop'].scale == ft['res']
        assert test == ['LoadImageFromFile', 'Resize', 'PackInputs']  # no crop
        assert cfg.test_dataloader.dataset.pipeline[1].scale == (ft['res'], ) * 2
        assert cfg.train_cfg.max_epochs == ft['epochs']
        assert cfg.optim_wrapper.optimizer.weight_decay == ft['weight_decay']
        assert cfg.model.backbone.drop_path_rate == ft['drop_path']
        [cosine] = cfg.param_scheduler  # no warm-up
        assert (cosine.type, cosine.begin, cosine.end) == ('CosineAnnealingLR', 0, ft['epochs'])
        lr_per_512, min_per_512 = ft['base_lr_per_512'], ft['min_lr_per_512']
        assert cfg.load_from.endswith('dat_pp_b_in1k_224.pth')
    else:
        batch = proto['batch_per_gpu'][size.upper()]
        assert train['RandomResizedCrop'].scale == 224
        assert test == ['LoadImageFromFile', 'Resize', 'CenterCrop', 'PackInputs']
        resize, crop = cfg.test_dataloader.dataset.pipeline[1:3]
        assert resize.scale == (proto['test_resize'], ) * 2  # square, not the shorter side
        assert crop.crop_size == proto['test_crop']
        assert cfg.train_cfg.max_epochs == proto['epochs']
        assert cfg.optim_wrapper.optimizer.weight_decay == proto['weight_decay']
        assert cfg.model.backbone.drop_path_rate == proto['drop_path'][size.upper()]
        warmup, cosine = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.end) == (
            'LinearLR', 1e-3, proto['warmup_epochs'])
        assert (cosine.type, cosine.begin) == ('CosineAnnealingLR', proto['warmup_epochs'])
        lr_per_512, min_per_512 = proto['base_lr_per_512'], proto['min_lr_per_512']
    assert cosine.convert_to_iter_based and cosine.get('eta_min') is None
    assert cfg.train_dataloader.batch_size == batch
    # the authors' linear scaling (8 GPUs): lr and its floor per 512 images
    lr = effective_lr(cfg, 8 * batch)
    assert lr == pytest.approx(lr_per_512 * 8 * batch / 512)
    assert lr * cosine.eta_min_ratio == pytest.approx(min_per_512 * 8 * batch / 512)


@pytest.mark.parametrize('config', [c for c in MAPPING if c.startswith('detection')])
def test_coco_protocol(config):
    """dat_pp_reference_numerics.md 6.2, the row of the authors' config."""
    cfg = load_cfg(config)
    coco = PROTO['coco']
    row = coco['configs'][osp.splitext(osp.basename(config))[0]]
    schedule = coco['schedules'][config[-5:-3]]
    assert cfg.model.backbone.drop_path_rate == row['dp']
    assert cfg.model.backbone.with_cp  # the authors' use_checkpoint=True
    optim = cfg.optim_wrapper
    assert optim.type == ('AmpOptimWrapper' if row['fp16'] else 'OptimWrapper')
    assert (optim.optimizer.type, optim.optimizer.betas, optim.optimizer.weight_decay) == (
        'AdamW', (0.9, 0.999), 0.05)
    assert optim.paramwise_cfg.norm_decay_mult == 0 and optim.get('clip_grad') is None
    assert cfg.train_dataloader.batch_size == row['img_per_gpu']
    assert effective_lr(cfg, coco['batch']) == pytest.approx(row['lr'])
    assert (cfg.train_cfg.type, cfg.train_cfg.max_epochs) == (
        'EpochBasedTrainLoop', schedule['epochs'])
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.by_epoch, warmup.end) == (
        'LinearLR', 1e-3, False, coco['warmup_iters'])
    assert (steps.type, steps.milestones, steps.gamma, steps.end) == (
        'MultiStepLR', schedule['steps'], 0.1, schedule['epochs'])
    # flip, then DETR's multi-scale / crop augmentation, for 1x and 3x alike
    train = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert train == ['LoadImageFromFile', 'LoadAnnotations', 'RandomFlip', 'RandomChoice',
                     'PackDetInputs']
    choice = cfg.train_dataloader.dataset.pipeline[3].transforms
    assert [[t.type for t in branch] for branch in choice] == [
        ['RandomChoiceResize'],
        ['RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']]
    assert [s[0] for s in choice[0][0].scales] == list(range(480, 801, 32))
    assert choice[1][1].crop_size == (384, 600)
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (1333, 800) and test['Resize'].keep_ratio
    fam = family(config)
    neck = cfg.model.neck
    assert neck.num_outs == 5
    assert neck.get('add_extra_convs', False) == (
        'on_input' if fam in ('retinanet', 'mask_rcnn') else False)
    if fam == 'cascade_mask_rcnn':
        heads = cfg.model.roi_head.bbox_head
        assert [h.type for h in heads] == ['Shared4Conv1FCBBoxHead'] * 3
        for head in heads:
            assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
            assert head.reg_decoded_bbox and not head.reg_class_agnostic
            assert head.norm_cfg.type == 'SyncBN'


@pytest.mark.parametrize('config', [c for c in MAPPING if c.startswith('segmentation')])
def test_ade20k_protocol(config):
    """dat_pp_reference_numerics.md 6.3."""
    cfg, size = load_cfg(config), size_of(config)
    head = 'SemanticFPN' if family(config) == 'semantic_fpn' else 'UperNet'
    proto = PROTO['ade20k'][head]
    assert cfg.model.backbone.drop_path_rate == proto['drop_path'][size.upper()]
    assert cfg.model.backbone.get('with_cp', False) == proto['with_cp']
    optim = cfg.optim_wrapper
    assert optim.type == ('AmpOptimWrapper' if proto['fp16'][size.upper()] else 'OptimWrapper')
    assert (optim.optimizer.type, optim.optimizer.lr, optim.optimizer.weight_decay) == (
        'AdamW', proto['lr'], proto['weight_decay'])
    assert 'norm_decay_mult' not in optim.paramwise_cfg
    assert 8 * cfg.train_dataloader.batch_size == proto['batch']
    assert cfg.train_cfg.max_iters == proto['iters']
    *warmup, poly = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == (
        'PolyLR', proto['power'], 0.0, proto['iters'])
    if proto['warmup_iters']:
        [warmup] = warmup
        assert (warmup.type, warmup.end, warmup.start_factor) == (
            'LinearLR', proto['warmup_iters'], 1e-6)
    else:
        assert not warmup
    # 512x512 crops; whole-image test at (2048, 512), no padding; --tta: ratios 0.5-1.75, flip
    assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.model.test_cfg.mode == 'whole'
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (2048, 512) and 'Pad' not in test
    assert cfg.tta_model.type == 'SegTTAModel'
    assert cfg.img_ratios == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert cfg.model.decode_head.num_classes == 150
    if head == 'UperNet':
        aux = cfg.model.auxiliary_head
        assert (aux.type, aux.in_index, aux.loss_decode.loss_weight) == ('FCNHead', 2, 0.4)


def authors_decay(name, shape, rule):
    """Whether the authors' code decays a backbone parameter (its name, prefixed as in their
    model): ImageNet (their optimizer.py) - no decay for 1-D tensors, biases and names with
    relative_position_bias_table / rpe_table; COCO / ADE20K (mmcv's constructor) - none for
    names containing a custom key (norm catches every LayerNorm, all `*.norm`)."""
    if rule == 'imagenet':
        return not (len(shape) == 1 or name.endswith('.bias') or
                    any(k in name for k in ('relative_position_bias_table', 'rpe_table')))
    return not any(k in name for k in ('absolute_pos_embed', 'relative_position_bias_table',
                                       'rpe_table', 'norm'))


@pytest.mark.parametrize('fam', list(FAMILIES))
def test_weight_decay_as_the_authors(fam):
    """The backbone parameters the config does not decay are exactly those the authors' code
    does not decay (their rule on their names; mmdat names some LayerNorms differently, e.g.
    the stem's `patch_embed.projection.1` is their `patch_proj.1.norm`); in the heads: none on
    norms for COCO, all decayed for ADE20K (the heads' BatchNorms are named `bn`)."""
    config = FAMILIES[fam]
    s = summary(config)
    rule = {'classification': 'imagenet', 'semantic_fpn': 'ade20k', 'upernet': 'ade20k'}.get(
        fam, 'coco')
    out = range(1, 4) if fam == 'retinanet' else range(4)
    mapping = authors_names(None if rule == 'imagenet' else tuple(out))
    expected = sorted('backbone.' + ours for ours, (theirs, shape) in mapping.items()
                      if not authors_decay('backbone.' + theirs, shape, rule))
    ours = [n for n in s['no_decay'] if n.startswith('backbone.')]
    assert ours == expected
    # not vacuous: the names mmdat gives differently, the tables, the decayed rpb
    for name in ('patch_embed.projection.1.weight', 'stages.0.blocks.1.attn.conv_offset.1.bias',
                 'stages.2.blocks.3.attn.rpe_table', 'stages.1.downsample.norm.weight'):
        assert 'backbone.' + name in ours, name
    assert 'backbone.stages.0.blocks.0.attn.rpb' not in ours
    assert ('backbone.stages.0.blocks.0.lpu.bias' in ours) == (rule == 'imagenet')
    heads = [n for n in s['no_decay'] if not n.startswith('backbone.')]
    if rule == 'imagenet':
        assert heads == ['head.fc.bias']
    elif rule == 'ade20k':
        assert heads == []
    else:  # norm_decay_mult=0: the cascade heads' SyncBN
        assert all(re.search(r'\.bn\.(weight|bias)$', n) for n in heads)
        assert bool(heads) == (fam == 'cascade_mask_rcnn')



# ----------------------------------------------------------------------------------- FLOPs
@functools.lru_cache(maxsize=None)
def complexity(config):
    return model_complexity(cfg_path(config))


#: counted here (the DAT-S/B++ classifiers and a detector: slow); every config's count is in
#: its metafile entry, made with tools/analysis/get_flops.py
FLOPS = ['classification/dat_pp_t_in1k.py'] + [
    pytest.param(c, id=c, marks=pytest.mark.slow)
    for c in ('classification/dat_pp_s_in1k.py', 'classification/dat_pp_b_in1k.py',
              'classification/dat_pp_b_in1k_384.py', 'detection/mask_rcnn_dat_pp_t_3x.py')]


@pytest.mark.parametrize('config', FLOPS)
def test_flops(config, capsys):
    """At the test size (1280x800 for COCO); next to the figures quoted for the paper
    (Papers-with-Code for ImageNet; the Mask R-CNN 3x figure from a later paper: both third
    party), and as written in the metafile."""
    result, row = complexity(config), paper_row(config)
    shape = {'classification': (row.get('res'), row.get('res')), 'detection': (800, 1280),
             'segmentation': (512, 2048)}[config.split('/')[0]]
    assert result['shape'] == shape
    ours = result['flops'] / 1e9
    with capsys.disabled():
        print(f'\n[DAT++ FLOPs] {config}: {result["params"] / 1e6:.2f} M params, {ours:.1f} '
              f'GFLOPs at {shape[1]}x{shape[0]} (quoted for the paper: {row["params"]} M, '
              f'{row["flops"]} G)')
    # ImageNet: the quoted figures to 1 %; the COCO figure (another paper's count) to 3 %
    tolerance = 0.01 if config.startswith('classification') else 0.03
    assert ours == pytest.approx(row['flops'], rel=tolerance)
    entry = metafile_entry(config)
    assert entry['Metadata']['FLOPs'] == pytest.approx(result['flops'], rel=1e-3)
    assert entry['Metadata']['Parameters'] == result['params']


# ----------------------------------------------------------------------------------- metafiles
@functools.lru_cache(maxsize=None)
def metafile(task):
    with open(osp.join(CONFIGS, task, 'metafile.yml')) as f:
        return yaml.safe_load(f)


def metafile_entry(config):
    entries = [m for m in metafile(config.split('/')[0])['Models']
               if m['Config'] == f'configs/{config}']
    assert len(entries) == 1, f'{len(entries)} metafile entries for {config}'
    return entries[0]


def test_metafiles_list_every_config():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    listed = []
    for task in ('classification', 'detection', 'segmentation'):
        assert f'configs/{task}/metafile.yml' in imports
        listed += [m['Config'] for m in metafile(task)['Models'] if 'dat_pp_' in m['Config']]
        collections = {c['Name'] for c in metafile(task).get('Collections', [])}
        if task != 'detection':  # detection's entries are in the ImageNet one's collection
            assert {m['In Collection'] for m in metafile(task)['Models']
                    if 'dat_pp_' in m['Config']} <= collections
    assert sorted(listed) == sorted(f'configs/{c}' for c in MAPPING)


@pytest.mark.parametrize('config', slow_unless_tiny(MAPPING))
def test_metafile_entry(config):
    """The authors' results, our parameter count (FLOPs: test_flops and get_flops.py), the
    protocol's schedule."""
    entry, row, cfg = metafile_entry(config), paper_row(config), load_cfg(config)
    assert entry['Name'] == osp.splitext(osp.basename(config))[0]
    assert entry['Weights'] is None
    assert entry['Metadata']['Parameters'] == summary(config)['params']
    assert entry['In Collection'].startswith('DAT++')
    metrics = {r['Task']: r['Metrics'] for r in entry['Results']}
    task = config.split('/')[0]
    if task == 'classification':
        assert metrics == {'Image Classification': {'Top 1 Accuracy': row['top1']}}
    elif task == 'detection':
        assert entry['Metadata']['Epochs'] == cfg.train_cfg.max_epochs
        expected = {'Object Detection': {'box AP': row['APb']}}
        if 'APm' in row:
            expected['Instance Segmentation'] = {'mask AP': row['APm']}
        assert metrics == expected
    else:
        assert entry['Metadata']['Lr schd'] == cfg.train_cfg.max_iters
        assert entry['Metadata']['Batch Size'] == 8 * cfg.train_dataloader.batch_size
        assert metrics == {'Semantic Segmentation': {'mIoU': row['mIoU'],
                                                     'mIoU(ms+flip)': row['mIoU_ms']}}


def test_metafile_figures_follow_the_models():
    """Counted once per model: configs with the same model at test time (1x and 3x) have the
    same figures, and larger backbones more."""
    entries = {c: metafile_entry(c)['Metadata'] for c in MAPPING}
    for config, meta in entries.items():
        twin = re.sub(r'_3x\.py$', '_1x.py', config)
        if twin != config and twin in entries:
            assert (meta['FLOPs'], meta['Parameters']) == (
                entries[twin]['FLOPs'], entries[twin]['Parameters'])
        for larger in ('s', 'b'):
            other = config.replace('_dat_pp_t_', f'_dat_pp_{larger}_').replace(
                'dat_pp_t_in1k', f'dat_pp_{larger}_in1k')
            if other != config and other in entries:
                assert entries[other]['FLOPs'] > meta['FLOPs']
                assert entries[other]['Parameters'] > meta['Parameters']

# ----------------------------------------------------------------------------------- runs
def cfg_path(config):
    return osp.join(CONFIGS, config)


def toolbox_script(config, tool):
    """``<package>/.mim/tools/<tool>.py``, the toolbox's own script for the config's task."""
    package = {'classification': 'mmpretrain', 'detection': 'mmdet',
               'segmentation': 'mmseg'}[config.split('/')[0]]
    return osp.join(osp.dirname(importlib.import_module(package).__file__), '.mim', 'tools',
                    f'{tool}.py')


def run(*args, timeout=900):
    """``python ARGS`` from the repository root, with this checkout's mmdat on the path (the
    toolboxes' own scripts import it through the configs' custom_imports)."""
    env = dict(os.environ, OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore',
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')]
                                                     if p]))
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{args[0]} failed:\n{out[-6000:]}'
    return out


def cli(opts):
    """``--cfg-options`` (mmengine's DictAction syntax)."""
    def fmt(v):
        if isinstance(v, (list, tuple)):
            inner = ','.join(fmt(x) for x in v)
            return f'[{inner}]' if isinstance(v, list) else f'({inner})'
        return str(v)
    return ['--cfg-options'] + [f'{k}={fmt(v)}' for k, v in opts.items()]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Generated data in each toolbox's layout: an ImageNet-style folder (64x64), COCO json
    with the 80 COCO categories (the shapes are the first three; the released detectors'
    heads have 80 classes) and ADE20K's layout (odd-sized images)."""
    root = tmp_path_factory.mktemp('data')
    cls = make_classification(str(root / 'cls'), num_train=6, num_val=9, size=64, seed=1)
    for split in ('train', 'val'):  # every class in both splits (the folders are the labels)
        assert sorted(os.listdir(osp.join(cls, split))) == sorted(CLASSES)
    det = make_detection(str(root / 'coco'), num_train=2, num_val=1, size=(96, 128), seed=0)
    from mmdet.datasets import CocoDataset
    for split in ('train', 'val'):
        path = osp.join(det, 'annotations', f'instances_{split}.json')
        with open(path) as f:
            ann = json.load(f)
        ann['categories'] = [dict(id=i + 1, name=n)
                             for i, n in enumerate(CocoDataset.METAINFO['classes'])]
        with open(path, 'w') as f:
            json.dump(ann, f)
    seg = make_segmentation(str(root / 'ade'), num_train=2, num_val=1, size=(75, 99), seed=0)
    return dict(classification=cls, detection=det, segmentation=seg)


def data_options(config, data, split):
    """``--cfg-options`` pointing the config's ``split`` ('train' or 'test') loader at the
    generated data, at its size (no workers)."""
    task = config.split('/')[0]
    root = data[task]
    loader = f'{split}_dataloader'
    opts = {f'{loader}.num_workers': 0, f'{loader}.persistent_workers': False,
            f'{loader}.dataset.data_root': root}
    if task == 'classification':
        opts[f'{loader}.dataset.metainfo.classes'] = list(CLASSES)
        opts[f'{loader}.batch_size'] = 3
        if split == 'train':
            opts[f'{loader}.dataset.pipeline.1.scale'] = 64  # RandomResizedCrop
        else:  # the square resize to 256 and the 224 crop, scaled to 72 and 64
            opts.update({f'{loader}.dataset.pipeline.1.scale': (72, 72),
                         f'{loader}.dataset.pipeline.2.crop_size': 64,
                         'test_evaluator.topk': (1, )})
    elif task == 'detection':
        name = 'train' if split == 'train' else 'val'
        opts.update({f'{loader}.dataset.ann_file': f'annotations/instances_{name}.json',
                     f'{loader}.dataset.data_prefix.img': f'{name}/'})
        if split == 'train':  # DETR's augmentation, at the images' size
            choice = f'{loader}.dataset.pipeline.3.transforms'
            opts.update({f'{choice}.0.0.scales': [(128, 96)], f'{choice}.1.0.scales': [(128, 96)],
                         f'{choice}.1.1.crop_size': (64, 96),
                         f'{choice}.1.2.scales': [(128, 96)]})
        else:
            opts.update({f'{loader}.dataset.pipeline.1.scale': (128, 96),
                         'test_evaluator.ann_file': osp.join(root, 'annotations',
                                                             'instances_val.json')})
    else:
        if split == 'train':  # RandomResize(2048, 512) and RandomCrop(512, 512), at 64
            opts.update({f'{loader}.dataset.pipeline.2.scale': (256, 64),
                         f'{loader}.dataset.pipeline.3.crop_size': (64, 64),
                         f'{loader}.batch_size': 2, 'model.data_preprocessor.size': (64, 64)})
        else:  # Resize(2048, 512): the 75x99 images to 72x95, whole-image inference
            opts[f'{loader}.dataset.pipeline.1.scale'] = (160, 72)
    return opts


def eval_options(config):
    """Few proposals and no score threshold: random or barely trained detectors still
    detect something for COCO's metric to score."""
    fam = family(config)
    if fam == 'retinanet':
        return {'model.test_cfg.score_thr': 0.0}
    if fam in ('mask_rcnn', 'cascade_mask_rcnn'):
        return {'model.test_cfg.rcnn.score_thr': 0.0, 'model.test_cfg.rpn.nms_pre': 64,
                'model.test_cfg.rpn.max_per_img': 64}
    return {}


#: the metric lines of the toolboxes' evaluators
METRICS = {
    'classification': r'Epoch\(test\).*accuracy/top1: [\d.]+',
    'detection': r'Epoch\(test\).*coco/bbox_mAP: [-\d.]+',
    'segmentation': r'Iter\(test\).*aAcc: [\d.]+\s+mIoU: [\d.]+\s+mAcc: [\d.]+',
}


def assert_metric(config, log):
    task = config.split('/')[0]
    assert re.search(METRICS[task], log), log[-3000:]
    if family(config) in ('mask_rcnn', 'cascade_mask_rcnn'):
        assert re.search(r'coco/segm_mAP: [-\d.]+', log), log[-3000:]


def authors_checkpoint(config, path):
    """A checkpoint in the authors' layout for the config's model: the DAT++ keys and shapes
    of dat_pp_reference_numerics.md 5.1 (classification, ``{'model': ...}``) or 5.2 (the
    mmdet 2.x / mmseg 0.x model, ``{'state_dict': ...}``: ``backbone.*`` with ``norms.{i}`` for
    the outputs, then the neck and heads), random values at a trained model's scale. The
    neck/head keys are those of the mmdet 3.x / mmseg 1.x model built from the config: these
    FPN, RPN, RetinaNet, (Cascade) RoI, FPNHead, UperHead and FCNHead modules kept their
    parameter names from mmdet 2.x / mmseg 0.x (whose model zoos' checkpoints mmdet 3.x and
    mmseg 1.x load unchanged)."""
    from test_converter import authors_dat_pp_state_dict
    size = size_of(config)
    C = DIMS[size]
    args = dict(dims=(C, 2 * C, 4 * C, 8 * C), heads=tuple(C // 32 * 2**i for i in range(4)),
                groups={'t': (1, 2, 4, 8), 's': (1, 2, 3, 6), 'b': (2, 4, 8, 16)}[size])
    g = torch.Generator().manual_seed(1)
    if config.startswith('classification'):
        sd = {k: 0.02 * v for k, v in authors_dat_pp_state_dict(**args).items()}
        torch.save({'model': sd}, path)
        return sd
    out = (1, 2, 3) if family(config) == 'retinanet' else (0, 1, 2, 3)
    sd = {f'backbone.{k}': 0.02 * v
          for k, v in authors_dat_pp_state_dict(**args, dense_norms=out).items()}
    model = build_model(load_cfg(config))
    for key, value in model.state_dict().items():
        if not key.startswith('backbone.'):
            sd[key] = (0.02 * torch.randn(value.shape, generator=g)
                       if value.is_floating_point() and 'running_' not in key else value)
    torch.save({'state_dict': sd, 'meta': {'epoch': 36}}, path)
    return sd


def slow_for(*fams):
    return [pytest.param(f, id=f, marks=[pytest.mark.slow] if f in fams else [])
            for f in FAMILIES]


@pytest.mark.parametrize('fam', slow_for('retinanet', 'cascade_mask_rcnn', 'semantic_fpn'))
def test_authors_checkpoint_converts_loads_strictly_and_tests(fam, data, tmp_path):
    """The converter maps every key (``--config``: the whole model, strictly), mmengine's
    loader loads the result strictly into the config's model with the converted values, and
    the toolbox's own tools/test.py evaluates it."""
    from mmengine.runner import load_checkpoint
    config = FAMILIES[fam]
    src, dst = tmp_path / 'authors.pth', tmp_path / 'converted.pth'
    sd = authors_checkpoint(config, src)
    assert converter().main([str(src), str(dst), '--config', cfg_path(config)]) == 0
    model = build_model(load_cfg(config))
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    ours = model.state_dict()
    prefix = '' if fam == 'classification' else 'backbone.'
    pairs = {prefix + 'patch_proj.4.norm.weight': 'backbone.patch_embed.projection.4.weight',
             prefix + 'stages.2.attns.3.rpe_table': 'backbone.stages.2.blocks.3.attn.rpe_table',
             prefix + 'down_projs.1.0.weight': 'backbone.stages.2.downsample.projection.weight'}
    if fam == 'classification':
        pairs['cls_head.weight'] = 'head.fc.weight'
    else:
        pairs['backbone.norms.3.norm.bias'] = 'backbone.norm3.bias'
        head = next(k for k in sd if not k.startswith('backbone.') and sd[k].dim() > 1)
        pairs[head] = head
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], sd[theirs], msg=f'{theirs} -> {mine}')
    opts = {**data_options(config, data, 'test'), **eval_options(config)}
    log = run(toolbox_script(config, 'test'), cfg_path(config), dst, '--work-dir',
              tmp_path / 'test', *cli(opts))
    assert_metric(config, log)


def nano_options(config):
    """DAT-nano++ (the zoo's small DAT++, widths 32-256) in place of the config's backbone, its
    widths for the neck / heads, no pretrained weights, fp32 (AMP needs a GPU)."""
    dims = [32, 64, 128, 256]
    opts = {'model.backbone.arch': 'nano++', 'model.backbone.init_cfg': None,
            'optim_wrapper.type': 'OptimWrapper'}
    fam = family(config)
    if fam == 'dat_pp':
        opts.update({'model.head.in_channels': dims[-1], 'model.head.num_classes': 3,
                     'data_preprocessor.num_classes': 3})
    elif fam == 'upernet':
        opts.update({'model.decode_head.in_channels': dims,
                     'model.auxiliary_head.in_channels': dims[2]})
    else:
        opts['model.neck.in_channels'] = dims[1:] if fam == 'retinanet' else dims
    return opts


def train_options(config):
    """A short run: 1 epoch of a few iterations (2 for segmentation), no validation."""
    task = config.split('/')[0]
    opts = {'default_hooks.logger.interval': 1, 'randomness.seed': 0}
    opts.update({'val_dataloader': None, 'val_cfg': None, 'val_evaluator': None})
    if task == 'segmentation':
        opts.update({'train_cfg.max_iters': 2, 'default_hooks.checkpoint.interval': 2,
                     'default_hooks.checkpoint.save_optimizer': False})
    else:
        opts['train_cfg.max_epochs'] = 1
    if task == 'classification':  # the cosine begins after the 20 warm-up epochs
        opts['param_scheduler.1.end'] = 300
    if family(config) in ('mask_rcnn', 'cascade_mask_rcnn'):
        # 64 proposals and 32 sampled RoIs, not 1000 / 512: fast on a CPU
        opts['model.train_cfg.rpn_proposal.max_per_img'] = 64
        stages = [''] if family(config) == 'mask_rcnn' else ['.0', '.1', '.2']
        opts.update({f'model.train_cfg.rcnn{s}.sampler.num': 32 for s in stages})
    return opts


@pytest.mark.parametrize('fam', slow_for('retinanet', 'cascade_mask_rcnn', 'semantic_fpn',
                                         'classification'))
def test_short_train_then_test(fam, data, tmp_path):
    """tools/train.py (mmdat's: the toolbox's own train.py, dispatched) on the generated data
    with DAT-nano++ and the config's activation checkpointing, then tools/test.py on the
    checkpoint it saved."""
    config = FAMILIES[fam]
    work = tmp_path / 'work'
    opts = {**nano_options(config), **data_options(config, data, 'train'),
            **train_options(config)}
    log = run(osp.join('tools', 'train.py'), cfg_path(config), '--work-dir', work, *cli(opts))
    assert re.search(r'(Epoch|Iter)\(train\).*loss: [\d.]+', log), log[-3000:]
    ckpt = work / ('iter_2.pth' if config.startswith('segmentation') else 'epoch_1.pth')
    assert ckpt.is_file(), log[-3000:]
    test_opts = {**nano_options(config), **data_options(config, data, 'test'),
                 **eval_options(config)}
    log = run(osp.join('tools', 'test.py'), cfg_path(config), ckpt, '--work-dir',
              tmp_path / 'test', *cli(test_opts))
    assert_metric(config, log)
