"""The segmentation configs against Table 5 of the paper (SemanticFPN and UperNet on ADE20K).

Every config under ``configs/segmentation`` is mapped to its Table 5 row (read from
``mmdat/data/paper_tables.yaml`` through ``mmdat.utils.paper_tables``, never copied), built with
mmseg's registry and measured with ``mmdat.utils.complexity`` (mmengine's counter, as mmseg's
``get_flops.py``: encoder + decode head at 512x2048, multiply-accumulates): parameters within
1 M, FLOPs within 3 % (the two rows the paper's own figures put out of reach: our recorded
count, ``mmdat.utils.paper.UNREACHABLE_FLOPS``). Counting at 512x2048 takes about a minute
per model on a shared CPU: the DAT-T rows are counted by default, DAT-S/B and the Swin
reference rows are ``slow``.
Short real runs train each head a few iterations with ``tools/train.py`` on a generated
ADE20K-layout dataset and evaluate the checkpoint with ``tools/test.py`` (mmseg's IoUMetric),
plain and with ``--tta``.
"""
import glob
import math
import os.path as osp

import pytest
import torch
import yaml

from _seg_utils import (CONFIGS, REPO, SEG_CONFIGS, SWIN_CONFIGS, built, cli_options,
                        complexity, config_path, load, metafile_entry, metafile_models,
                        paper_row, printed_metrics, run_tool, short_run_options, table5_row)
from mmdat.datasets.synthetic import make_segmentation
from mmdat.utils import UNREACHABLE_FLOPS, paper_tables

PARAMS_ABS = 1e6  # Table 5 prints whole millions
FLOPS_REL = 0.03
#: Table 5 rows whose FLOPs the paper's own figures put out of reach (no key downsampling r
#: reproduces them; README): checked against our count as recorded, with the reason, in
#: mmdat.utils.paper.UNREACHABLE_FLOPS (also read by tools/analysis/get_flops.py --paper and
#: its tests, which check the record against the metafile)
UNREACHABLE = {osp.basename(c): r for c, r in UNREACHABLE_FLOPS.items()
               if r.table == 'table5_ade20k'}
PROTOCOLS = paper_tables()['training_protocols']['ade20k']
SIZE = {'DAT-T': 'T', 'DAT-S': 'S', 'DAT-B': 'B'}


# ------------------------------------------------------------------------------ the configs
def test_every_config_is_mapped_to_table5():
    files = sorted(osp.basename(p) for p in glob.glob(osp.join(SEG_CONFIGS, '*.py'))
                   if '_dat_pp_' not in p)  # DAT++: tests/test_configs_dat_pp.py
    assert files == sorted(CONFIGS)
    dat_rows = {(r['backbone'], r['head']) for r in paper_tables()['table5_ade20k']
                if r['backbone'].startswith('DAT')}
    assert dat_rows == set(CONFIGS.values())


@pytest.mark.parametrize('config', list(CONFIGS))
def test_config_builds_with_mmseg(config):
    cfg = load(config)
    backbone, head = CONFIGS[config]
    assert cfg.default_scope == 'mmseg'
    assert 'mmdat' in cfg.custom_imports['imports']  # mmseg's own tools import mmdat
    facts = built(config)
    assert facts['segmentor'] == 'EncoderDecoder'
    assert facts['backbone'] == 'DAT'
    assert facts['decode_head'] == {'SemanticFPN': 'FPNHead', 'UperNet': 'UPerHead'}[head]
    assert facts['auxiliary_head'] == {'SemanticFPN': 'NoneType', 'UperNet': 'FCNHead'}[head]
    # the paper's settings
    bb = cfg.model.backbone
    assert bb.drop_path_rate == PROTOCOLS['drop_path'][SIZE[backbone]]
    assert bb.out_indices == (0, 1, 2, 3)
    size = backbone[-1].lower()
    assert bb.init_cfg == cfg.dat.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'checkpoints/dat_{size}_in1k_224.pth', prefix='backbone.')
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.model.test_cfg.mode == 'whole'
    # multi-scale + flip test available through mmseg's --tta
    assert cfg.tta_model.type == 'SegTTAModel'
    assert cfg.tta_pipeline[1].type == 'TestTimeAug'


@pytest.mark.parametrize('config', [c for c in CONFIGS if CONFIGS[c][1] == 'SemanticFPN'])
def test_semantic_fpn_protocol(config):
    """PVT's SemanticFPN protocol: AdamW 2e-4 (1e-4 per 16 images), wd 1e-4, poly 0.9,
    40k iterations, batch 8 x 4, 512x512 crops."""
    cfg = load(config)
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4, weight_decay=1e-4)
    [poly] = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 0.9, 0.0, 40000)
    assert cfg.train_cfg.max_iters == PROTOCOLS['SemanticFPN']['iters']
    assert 8 * cfg.train_dataloader.batch_size == 32
    assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)


@pytest.mark.parametrize('config', [c for c in CONFIGS if CONFIGS[c][1] == 'UperNet'])
def test_upernet_protocol(config):
    """Swin's UperNet protocol (mmseg's Swin config, inherited)."""
    cfg = load(config)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 6e-5, 0.01)
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    for key in ('norm', 'relative_position_bias_table', 'rpe_table', 'conv_offset.1'):
        assert keys[key] == dict(decay_mult=0.)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 1500)
    assert (poly.type, poly.power, poly.end) == ('PolyLR', 1.0, 160000)
    assert cfg.train_cfg.max_iters == PROTOCOLS['UperNet']['iters']
    assert 8 * cfg.train_dataloader.batch_size == 16
    assert cfg.model.auxiliary_head.in_index == 2  # stage 3
    assert cfg.model.auxiliary_head.in_channels == cfg.model.decode_head.in_channels[2]


# ------------------------------------------------------------------------- params and FLOPs
@pytest.mark.parametrize('config', list(CONFIGS))
def test_params_match_table5(config):
    ours, paper = built(config)['params'], paper_row(config)['params']
    assert abs(ours - paper * 1e6) <= PARAMS_ABS, f'{config}: {ours / 1e6:.2f} M vs {paper} M'
    assert metafile_entry(config)['Metadata']['Parameters'] == ours


def counted_param(config):
    """DAT-T's rows are counted by default, DAT-S/B's are slow."""
    return pytest.param(config, marks=[pytest.mark.slow] if CONFIGS[config][0] != 'DAT-T'
                        else [], id=config)


@pytest.mark.parametrize('config', [counted_param(c) for c in CONFIGS])
def test_flops_match_table5(config):
    ours, paper = complexity(config)['flops'] / 1e9, paper_row(config)['flops']
    if config in UNREACHABLE:
        record = UNREACHABLE[config]
        assert ours == pytest.approx(record.flops, abs=0.01), (
            f'{config}: {ours:.2f} G, recorded {record.flops} G ({record.reason})')
    else:
        assert ours == pytest.approx(paper, rel=FLOPS_REL), f'{config}: {ours:.1f} G vs {paper} G'


@pytest.mark.parametrize('config', [counted_param(c) for c in CONFIGS])
def test_metafile_flops_are_measured(config):
    measured = complexity(config)  # cached: counted once per session
    assert measured['shape'] == (512, 2048)
    assert metafile_entry(config)['Metadata']['FLOPs'] == measured['flops']


@pytest.mark.slow
@pytest.mark.parametrize('backbone', list(SWIN_CONFIGS))
def test_counter_reproduces_swin_rows(backbone):
    """The counting convention: mmseg's own Swin UperNet configs give Table 5's Swin rows."""
    measured = complexity(SWIN_CONFIGS[backbone])
    row = table5_row(backbone, 'UperNet')
    assert measured['flops'] / 1e9 == pytest.approx(row['flops'], rel=0.005)
    assert abs(measured['params'] - row['params'] * 1e6) <= PARAMS_ABS


# ------------------------------------------------------------------------------- metafile
def test_metafile_lists_every_config_with_the_papers_results():
    models = metafile_models()
    assert sorted(m['Config'] for m in models.values() if '_dat_pp_' not in m['Config']) == \
        sorted(f'configs/segmentation/{c}' for c in CONFIGS)
    for config in CONFIGS:
        row = paper_row(config)
        [result] = metafile_entry(config)['Results']
        assert (result['Task'], result['Dataset']) == ('Semantic Segmentation', 'ADE20K')
        assert result['Metrics'] == {
            'mIoU': row['mIoU'], 'mAcc': row['mAcc'], 'mIoU(ms+flip)': row['mIoU_ms']}
    with open(osp.join(REPO, 'model-index.yml')) as f:
        assert 'configs/segmentation/metafile.yml' in yaml.safe_load(f)['Import']


# ------------------------------------------------------------------------------ inference
@pytest.mark.parametrize('config', ['semantic_fpn_dat_t_40k.py', 'upernet_dat_t_160k.py'])
def test_whole_image_inference_at_an_odd_size(config):
    from mmseg.structures import SegDataSample
    from mmdat.utils.complexity import build_model
    torch.manual_seed(0)
    model = build_model(load(config))
    H, W = 75, 99
    meta = dict(ori_shape=(H, W), img_shape=(H, W), pad_shape=(H, W))
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 256, (3, H, W), dtype=torch.uint8)],
             data_samples=[SegDataSample(metainfo=meta)]), False)
    with torch.no_grad():
        [pred] = model.predict(data['inputs'], data['data_samples'])
    assert pred.seg_logits.data.shape == (150, H, W)
    assert pred.pred_sem_seg.data.shape == (1, H, W)


# ------------------------------------------------------------------------------ short runs
@pytest.fixture(scope='module')
def seg_data(tmp_path_factory):
    """Two training and one validation image(s) of an odd size in the ADE20K layout."""
    return make_segmentation(str(tmp_path_factory.mktemp('ade')), num_train=2, num_val=1,
                             size=(75, 99), seed=0)


_CHECKPOINTS = {}


def short_train(config, data_root, work_root):
    """tools/train.py for 2 iterations (cached per config); the checkpoint."""
    if config not in _CHECKPOINTS:
        work_dir = osp.join(work_root, config[:-3])
        rc, log, _ = run_tool(['tools/train.py', config_path(config), '--work-dir', work_dir]
                              + cli_options(short_run_options(data_root)))
        assert rc == 0, log[-5000:]
        # SyncBN (mmseg's norm_cfg) reverted to BatchNorm by mmengine on one process
        assert 'SyncBatchNorm (SyncBN) layers in the model will be automatically reverted' in log
        assert 'Iter(train) [2/2]' in log
        printed_metrics(log)  # validation at the end of training
        ckpt = osp.join(work_dir, 'iter_2.pth')
        assert osp.isfile(ckpt), log[-3000:]
        _CHECKPOINTS[config] = ckpt
    return _CHECKPOINTS[config]


@pytest.fixture(scope='module')
def work_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp('work'))


def short_test(config, ckpt, data_root, work_root, tta):
    args = ['tools/test.py', config_path(config), ckpt, '--work-dir',
            osp.join(work_root, config[:-3] + ('_tta' if tta else '_test'))]
    rc, log, _ = run_tool(args + (['--tta'] if tta else [])
                          + cli_options(short_run_options(data_root)))
    assert rc == 0, log[-5000:]
    assert 'per class results' in log  # IoUMetric's table
    metrics = printed_metrics(log)
    for name, value in metrics.items():
        assert math.isfinite(value) and 0 <= value <= 100, (name, value)
    return metrics


# each head is trained, then tested once by default: SemanticFPN with --tta, UperNet without
@pytest.mark.parametrize('config', [
    pytest.param('semantic_fpn_dat_t_40k.py', marks=pytest.mark.slow), 'upernet_dat_t_160k.py'])
def test_short_train_then_test(config, seg_data, work_root):
    ckpt = short_train(config, seg_data, work_root)
    short_test(config, ckpt, seg_data, work_root, tta=False)


@pytest.mark.parametrize('config', [
    'semantic_fpn_dat_t_40k.py',
    pytest.param('upernet_dat_t_160k.py', marks=pytest.mark.slow)])
def test_short_test_with_tta(config, seg_data, work_root):
    ckpt = short_train(config, seg_data, work_root)
    short_test(config, ckpt, seg_data, work_root, tta=True)
