"""The classification configs against the paper (Table 2, ablations Tables 6-9, Figure 4).

Every config under ``configs/classification`` is mapped explicitly to what the paper says
about it (a row of ``paper_tables()``, read here, never copied), built with mmpretrain's
registry and measured with :func:`mmdat.utils.complexity.model_complexity` (parameters, and
FLOPs as multiply-accumulates, the paper's convention, at 224x224; 384x384 for the 384 model).
Short real runs go through ``tools/train.py`` (and ``tools/test.py``) with ``--cfg-options``;
``configs/classification/metafile.yml`` is checked against the measurements and the paper.
Counting DAT-S/DAT-B FLOPs takes a while on a shared CPU: those tests are marked ``slow``
(DAT-S/B parameters are checked by the default run).
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
from mmengine.analysis import parameter_count
from mmengine.runner.checkpoint import load_state_dict
from mmpretrain.registry import MODELS

from mmdat.datasets import make_classification
from mmdat.datasets.synthetic import CLASSES
from mmdat.models.layers import DeformableAttention
from mmdat.utils import paper_tables
from mmdat.utils.complexity import load_config, model_complexity

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG_DIR = osp.join(ROOT, 'configs', 'classification')
PAPER = paper_tables()

# ----------------------------------------------------------------------------------- mapping
# config (relative to configs/classification) -> the paper's rows it reproduces:
# (table key in paper_tables.yaml, the fields that select the row)
PAPER_ROWS = {
    'dat_t_in1k.py': [
        ('table2_imagenet', dict(model='DAT-T', res=224)),
        ('table6_ablation_geometry', dict(stages12='S', offsets=True, pos_embed='relative')),
        ('table7_ablation_stages', dict(deformable_stages=[3, 4])),
    ],
    'dat_s_in1k.py': [('table2_imagenet', dict(model='DAT-S', res=224))],
    'dat_b_in1k.py': [('table2_imagenet', dict(model='DAT-B', res=224))],
    'dat_b_in1k_384.py': [('table2_imagenet', dict(model='DAT-B', res=384))],
    # Table 6: geometric information (offsets, position embedding, attention of stages 1-2)
    'ablations/dat_t_no_offset_no_pe.py': [
        ('table6_ablation_geometry', dict(stages12='S', offsets=False, pos_embed='none'))],
    'ablations/dat_t_no_offset_rpe.py': [
        ('table6_ablation_geometry', dict(stages12='S', offsets=False, pos_embed='relative'))],
    'ablations/dat_t_offset_no_pe.py': [
        ('table6_ablation_geometry', dict(stages12='S', offsets=True, pos_embed='none'))],
    'ablations/dat_t_offset_fixed_pe.py': [
        ('table6_ablation_geometry', dict(stages12='S', offsets=True, pos_embed='fixed'))],
    'ablations/dat_t_offset_dwconv_pe.py': [
        ('table6_ablation_geometry', dict(stages12='S', offsets=True, pos_embed='dwconv'))],
    'ablations/dat_t_pvt_stages12.py': [
        ('table6_ablation_geometry', dict(stages12='P', offsets=True, pos_embed='relative'))],
    # Table 7: stages with (local, deformable) pairs
    'ablations/dat_t_deform_stages_1234.py': [
        ('table7_ablation_stages', dict(deformable_stages=[1, 2, 3, 4]))],
    'ablations/dat_t_deform_stages_234.py': [
        ('table7_ablation_stages', dict(deformable_stages=[2, 3, 4]))],
    'ablations/dat_t_deform_stages_4.py': [
        ('table7_ablation_stages', dict(deformable_stages=[4]))],
    'ablations/dat_t_deform_stages_none.py': [
        ('table7_ablation_stages', dict(deformable_stages=[]))],
}
# Figure 4: offset range factor s -> config
FIGURE4 = {s: f'ablations/dat_t_offset_range_s{s}.py'
           for s in PAPER['figure4_offset_range']['s_values']}
# Table 8 (the paper's text gives only ratios to DAT-T: see test_table8_*) and Table 9
# (Appendix B; no figures in the paper's text): the row -> config maps of get_flops --paper
from mmdat.utils.paper_flops import TABLE8, TABLE9  # noqa: E402
# tolerances: Tables 6-7 print 0.01 M; Table 2 prints whole millions (DAT-T's 28.3 M as 29 M,
# as Swin's paper prints Swin-T's 28.3 M) and one decimal of GFLOPs
TOLERANCE = {
    'table2_imagenet': dict(params_abs=1.0, flops_rel=0.02),
    'table6_ablation_geometry': dict(params_abs=0.01, flops_rel=0.01),
    'table7_ablation_stages': dict(params_abs=0.01, flops_rel=0.01),
}
# Table 8, Appendix A: "the same number of keys as DAT [...] 2.6x memory and 1.3x FLOPs" of
# DAT-T; 16 keys is the "smaller memory budget" variant. No numbers in paper_tables.yaml
# (only this sentence): these are our bounds around what we measure (README: 2.64x memory,
# 1.35x FLOPs; 16 keys: 1.03x memory, 0.97x FLOPs), wide enough for both the paper's ratios.
TABLE8_BOUNDS = {
    'ddetr_same_keys': dict(memory=(2.3, 3.0), flops=(1.25, 1.45)),
    'ddetr_16_keys': dict(memory=(0.9, 1.2), flops=(0.9, 1.05)),
}


def paper_row(table, **fields):
    rows = [r for r in PAPER[table] if all(r.get(k) == v for k, v in fields.items())]
    assert len(rows) == 1, f'{table}: {len(rows)} rows match {fields}'
    return rows[0]


def is_large(config):
    """DAT-S/DAT-B configs: FLOP counting takes a while on a shared CPU."""
    return osp.basename(config).startswith(('dat_s_', 'dat_b_'))


def slow_marks(config):
    return [pytest.mark.slow] if is_large(config) else []


def slow_if_large(config):
    return pytest.param(config, marks=slow_marks(config), id=config)


# ----------------------------------------------------------------------------------- helpers
def cfg_path(config):
    return osp.join(CFG_DIR, config)


@functools.lru_cache(maxsize=None)
def load_cfg(config):
    return load_config(cfg_path(config))


def build(config):
    torch.manual_seed(0)
    return MODELS.build(load_cfg(config).model)


@functools.lru_cache(maxsize=None)
def n_params(config):
    """Parameters of the built classifier, counted as model_complexity counts them."""
    return parameter_count(build(config))['']


@functools.lru_cache(maxsize=None)
def complexity(config):
    result = model_complexity(cfg_path(config))
    assert result['params'] == n_params(config)
    return result


def n_flops(config):
    return complexity(config)['flops']


def all_configs():
    """The DAT configs (DAT++'s, dat_pp_*: tests/test_configs_dat_pp.py)."""
    paths = glob.glob(osp.join(CFG_DIR, '**', '*.py'), recursive=True)
    return sorted(osp.relpath(p, CFG_DIR) for p in paths if 'dat_pp_' not in p)


# ----------------------------------------------------------------------------------- tests
def test_every_config_is_mapped_once():
    mapped = (list(PAPER_ROWS) + list(FIGURE4.values()) + list(TABLE9.values())
              + [c for c in TABLE8.values() if c not in PAPER_ROWS])
    assert len(mapped) == len(set(mapped))
    assert sorted(mapped) == all_configs()
    assert list(TABLE8) == PAPER['table8_deformable_detr_attention']['variants']
    assert list(TABLE9) == PAPER['table9_conv_patch_embedding']['variants']


@pytest.mark.parametrize('config', all_configs())
def test_config_builds_with_mmpretrain(config):
    cfg = load_cfg(config)
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmdat' in cfg.custom_imports['imports']  # the toolboxes' own tools need it
    model = build(config)
    assert type(model).__name__ == 'ImageClassifier'
    assert model.head.fc.in_features == model.backbone.num_features[-1]


@pytest.mark.parametrize('config', list(PAPER_ROWS))
def test_params_match_paper(config):
    ours = n_params(config) / 1e6
    for table, fields in PAPER_ROWS[config]:
        paper = paper_row(table, **fields)['params']
        assert abs(ours - paper) <= TOLERANCE[table]['params_abs'], (
            f'{config}: {ours:.4f} M vs {table} {fields}: {paper} M')


@pytest.mark.parametrize('config', [slow_if_large(c) for c in PAPER_ROWS])
def test_flops_match_paper(config):
    result = complexity(config)
    res = 384 if config.endswith('_384.py') else 224
    assert result['shape'] == (res, res)
    ours = result['flops'] / 1e9
    for table, fields in PAPER_ROWS[config]:
        paper = paper_row(table, **fields)['flops']
        assert ours == pytest.approx(paper, rel=TOLERANCE[table]['flops_rel']), (
            f'{config}: {ours:.4f} G vs {table} {fields}: {paper} G')


def test_training_recipe_follows_paper():
    """The 300-epoch recipe and the 384 fine-tuning, against paper_tables' protocols."""
    proto = PAPER['training_protocols']['imagenet']
    for arch in ('t', 's', 'b'):
        cfg = load_cfg(f'dat_{arch}_in1k.py')
        optim = cfg.optim_wrapper
        assert cfg.train_cfg.max_epochs == proto['epochs']
        assert optim.optimizer.type == proto['optimizer']
        assert optim.optimizer.lr == proto['base_lr_per_1024']
        assert cfg.auto_scale_lr.base_batch_size == 1024
        assert optim.optimizer.weight_decay == proto['weight_decay']
        paramwise = optim.paramwise_cfg
        assert paramwise.norm_decay_mult == paramwise.bias_decay_mult == 0
        for table in ('.relative_position_bias_table', '.rpe_table'):  # window / deformable
            assert paramwise.custom_keys[table].decay_mult == 0
        assert optim.clip_grad.max_norm > 0
        warmup, decay = cfg.param_scheduler
        assert (warmup.type, warmup.end) == ('LinearLR', proto['warmup_epochs'])
        assert decay.type == 'CosineAnnealingLR' and proto['schedule'] == 'cosine'
        assert cfg.model.backbone.drop_path_rate == proto['drop_path'][arch.upper()]
        pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
        assert 'RandAugment' in pipeline and 'RandomErasing' not in pipeline
        assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
        assert cfg.model.head.loss.label_smooth_val == 0.1
        assert not any('EMA' in h.type for h in cfg.get('custom_hooks', []))
        test_pipeline = cfg.test_dataloader.dataset.pipeline
        assert [t.type for t in test_pipeline[1:3]] == ['ResizeEdge', 'CenterCrop']
        assert (test_pipeline[1].scale, test_pipeline[2].crop_size) == (256, 224)
    finetune = PAPER['training_protocols']['imagenet_384_finetune']
    cfg = load_cfg('dat_b_in1k_384.py')
    assert cfg.model.backbone.arch == 'base' and finetune['model'] == 'DAT-B'
    assert cfg.train_cfg.max_epochs == finetune['epochs']
    assert cfg.model.backbone.drop_path_rate == finetune['drop_path']
    assert cfg.optim_wrapper.optimizer.weight_decay == finetune['weight_decay']
    assert cfg.model.backbone.window_size == finetune['window']
    assert cfg.model.backbone.img_size == 384
    assert cfg.train_dataloader.dataset.pipeline[1].scale == 384
    assert cfg.test_dataloader.dataset.pipeline[1].scale == 384


def test_384_model_loads_the_224_checkpoint():
    """``load_from`` of the 384 config: every tensor of the 224 model loads (the window and
    deformable position tables resized by the backbone's load hooks; the window index
    buffers are the 384 model's own)."""
    model_224, model_384 = build('dat_b_in1k.py'), build('dat_b_in1k_384.py')
    state = model_224.state_dict()
    shapes_384 = {k: v.shape for k, v in model_384.state_dict().items()}
    resized = [k for k, v in state.items() if v.shape != shapes_384[k]]
    sized_by_window = ('relative_position_bias_table', 'relative_position_index', 'rpe_table')
    assert resized and all(k.endswith(sized_by_window) for k in resized)
    load_state_dict(model_384, state, strict=True)  # raises on a missing or mismatched key
    window = 'backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table'
    assert model_384.state_dict()[window].shape[0] == (2 * 12 - 1)**2


@pytest.mark.parametrize('s,config', list(FIGURE4.items()))
def test_figure4_offset_range_reaches_every_deformable_block(s, config):
    model = build(config)
    blocks = [m for m in model.modules() if isinstance(m, DeformableAttention)]
    assert len(blocks) == 4  # DAT-T: 3 in stage 3, 1 in stage 4
    assert [b.offset_range for b in blocks] == [float(s)] * 4
    assert parameter_count(model)[''] == n_params('dat_t_in1k.py')


@pytest.mark.parametrize('variant,config', [
    pytest.param(v, c, marks=slow_marks(c), id=v) for v, c in TABLE9.items()])
def test_table9_conv_stem(variant, config, capsys):
    """No figures for Table 9 in the text: forward, and report params/FLOPs next to the
    non-overlapping stem's."""
    model = build(config).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 80), mode='tensor')
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    plain = config.replace('_conv_stem', '')
    stem = model.backbone.patch_embed.projection
    assert (stem.kernel_size, stem.stride, stem.padding) == ((7, 7), (4, 4), (3, 3))
    for stage in model.backbone.stages[1:]:
        conv = stage.downsample.projection
        assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (2, 2), (1, 1))
    params, flops = n_params(config) / 1e6, n_flops(config) / 1e9
    base_params, base_flops = n_params(plain) / 1e6, n_flops(plain) / 1e9
    assert params > base_params and flops > base_flops
    with capsys.disabled():
        print(f'\n[Table 9] {variant}: {params:.2f} M params, {flops:.2f} GFLOPs '
              f'({plain}: {base_params:.2f} M, {base_flops:.2f} GFLOPs)')


def saved_activation_bytes(model, x):
    """Bytes of the tensors autograd keeps for the backward pass of one training step.

    This is the activation memory of training (what grows with the batch and dominates the
    training memory the paper compares), known once the forward has run; the parameters,
    which autograd also saves, are left out. Storages are counted once.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(x, mode='tensor')
    assert logits.requires_grad
    return sum(storages.values())


def test_table8_ddetr_attention_memory_and_flops(capsys):
    """Appendix A: D-DETR attention with DAT's key count costs 2.6x memory, 1.3x FLOPs."""
    x = torch.randn(1, 3, 224, 224)
    measured = {}
    for variant, config in TABLE8.items():
        model = build(config).train()
        measured[variant] = dict(memory=saved_activation_bytes(model, x),
                                 flops=n_flops(config), params=n_params(config))
    dat = measured['dat']
    ratios = {v: dict(memory=m['memory'] / dat['memory'], flops=m['flops'] / dat['flops'])
              for v, m in measured.items()}
    with capsys.disabled():
        print('\n[Table 8] training forward at 224, batch 1, activations saved for backward:')
        for variant, m in measured.items():
            print(f'  {variant:16s} {m["memory"] / 2**20:7.1f} MiB '
                  f'({ratios[variant]["memory"]:.2f}x)  {m["flops"] / 1e9:.3f} GFLOPs '
                  f'({ratios[variant]["flops"]:.2f}x)  {m["params"] / 1e6:.2f} M params')
    for variant, bounds in TABLE8_BOUNDS.items():
        for what, (low, high) in bounds.items():
            assert low <= ratios[variant][what] <= high, (variant, what, ratios[variant])


# ----------------------------------------------------------------------------------- metafile
def metafile_models():
    """The DAT entries (DAT++'s: tests/test_configs_dat_pp.py)."""
    with open(osp.join(CFG_DIR, 'metafile.yml')) as f:
        meta = yaml.safe_load(f)
    return {m['Name']: m for m in meta['Models'] if m['In Collection'] == 'DAT'}


def config_of(model):
    return osp.relpath(osp.join(ROOT, model['Config']), CFG_DIR)


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=slow_marks(config_of(m)), id=n)
    for n, m in metafile_models().items()])
def test_metafile_entry(name):
    model = metafile_models()[name]
    config = config_of(model)
    assert name == osp.splitext(osp.basename(config))[0]
    assert model['In Collection'] == 'DAT' and model['Weights'] is None
    assert model['Metadata']['Training Data'] == 'ImageNet-1k'
    # measured numbers, as written in the metafile
    assert model['Metadata']['Parameters'] == n_params(config)
    assert model['Metadata']['FLOPs'] == pytest.approx(n_flops(config), rel=1e-4)
    # the paper's top-1, from the mapped row (every row of one config has the same top-1)
    (result, ) = model['Results']
    assert (result['Task'], result['Dataset']) == ('Image Classification', 'ImageNet-1k')
    top1 = {paper_row(t, **f)['top1'] for t, f in PAPER_ROWS[config]}
    assert len(top1) == 1 and result['Metrics']['Top 1 Accuracy'] == top1.pop()


def test_metafile_covers_the_paper_rows():
    assert sorted(config_of(m) for m in metafile_models().values()) == sorted(PAPER_ROWS)


def test_model_index_lists_the_classification_metafile():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    assert 'configs/classification/metafile.yml' in index['Import']
    for model in metafile_models().values():
        assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']


# ----------------------------------------------------------------------------------- real runs
#: one config of each family: (config, extra --cfg-options, evaluated by). The conv-stem and
#: ablation runs shrink the backbone to DAT-nano (same stems, stage types and attention as
#: the config, a third of the width) and are evaluated by the validation that follows the
#: training epoch; the main run trains DAT-T itself and is evaluated by tools/test.py from
#: its checkpoint. Each tool run is a fresh process (~10 s of imports): the split keeps the
#: default run short.
NANO = ['model.backbone.arch=nano', 'model.head.in_channels=256']
RUNS = {
    'main': ('dat_t_in1k.py', [], 'test.py'),
    'conv_stem': ('dat_t_conv_stem_in1k.py', NANO, 'train.py'),
    'ablation': ('ablations/dat_t_pvt_stages12.py', NANO, 'train.py'),
}


def short_run_options(data_root, validate):
    """--cfg-options turning a 300-epoch ImageNet config into a 3-iteration run on the
    generated 64x64 folder (batch 2, 3 classes), the recipe otherwise untouched."""
    classes = '[' + ','.join(CLASSES) + ']'
    opts = ['model.head.num_classes=3', 'data_preprocessor.num_classes=3',
            'train_cfg.max_epochs=1', f'train_cfg.val_interval={1 if validate else 2}',
            'default_hooks.logger.interval=1', 'randomness.seed=0',
            # the cosine phase keeps the 300-epoch end (begin 20 > max_epochs otherwise)
            'param_scheduler.1.end=300',
            'train_dataloader.dataset.pipeline.1.scale=64',  # RandomResizedCrop
            'val_evaluator.topk=(1,)', 'test_evaluator.topk=(1,)']
    for split, batch in (('train', 2), ('val', 3), ('test', 3)):
        loader = f'{split}_dataloader'
        opts += [f'{loader}.batch_size={batch}', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False',
                 f'{loader}.dataset.data_root={data_root}',
                 f'{loader}.dataset.metainfo.classes={classes}']
        if split != 'train':  # ResizeEdge 256 -> CenterCrop 224, scaled to 72 -> 64
            opts += [f'{loader}.dataset.pipeline.1.scale=72',
                     f'{loader}.dataset.pipeline.2.crop_size=64']
    return opts


@pytest.fixture(scope='module')
def cls_data(tmp_path_factory):
    root = make_classification(str(tmp_path_factory.mktemp('cls')), num_train=6, num_val=9,
                               size=64, seed=1)
    for split in ('train', 'val'):  # every class in both splits (the folders are the labels)
        assert sorted(os.listdir(osp.join(root, split))) == sorted(CLASSES)
    return root


def run_tool(tool, *args, cwd):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', tool), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def top1_of(log, mode):
    match = re.search(rf'Epoch\({mode}\).*accuracy/top1: ([\d.]+)', log)
    assert match, log[-3000:]
    top1 = float(match.group(1))
    assert 0 <= top1 <= 100
    return top1


@pytest.mark.parametrize('family', list(RUNS))
def test_train_and_test_tools(family, cls_data, tmp_path, capsys):
    config, extra, evaluator = RUNS[family]
    opts = short_run_options(cls_data, validate=evaluator == 'train.py') + extra
    work = tmp_path / 'work'
    log = run_tool('train.py', cfg_path(config), '--work-dir', str(work), '--cfg-options',
                   *opts, cwd=str(tmp_path))
    losses = re.findall(r'Epoch\(train\) +\[1\]\[(\d)/3\].*loss: ([\d.]+)', log)
    assert [i for i, _ in losses] == ['1', '2', '3'], log[-3000:]
    assert all(0 < float(loss) < 10 for _, loss in losses)
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file()
    if evaluator == 'train.py':
        top1 = top1_of(log, 'val')
    else:
        log = run_tool('test.py', cfg_path(config), str(ckpt), '--work-dir',
                       str(tmp_path / 'test'), '--cfg-options', *opts, cwd=str(tmp_path))
        top1 = top1_of(log, 'test')
    with capsys.disabled():
        print(f'\n[run] {family} ({config}): 3 iterations, accuracy/top1 {top1:.2f} on the '
              f'9 generated val images ({evaluator})')
