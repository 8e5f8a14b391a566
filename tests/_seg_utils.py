"""Helpers of tests/test_configs_segmentation.py: the configs' Table 5 rows, their complexity
(counted by :mod:`mmdat.utils.complexity`, as mmseg's ``get_flops.py``) and the options of
the short real runs through ``tools/train.py`` / ``tools/test.py``."""
import functools
import os
import os.path as osp
import re
import subprocess
import sys
import time

import yaml

from mmdat.utils import paper_tables
from mmdat.utils.complexity import build_model, load_config, model_complexity

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEG_CONFIGS = osp.join(REPO, 'configs', 'segmentation')
METAFILE = osp.join(SEG_CONFIGS, 'metafile.yml')

#: config file -> (backbone, head) of its Table 5 row
CONFIGS = {
    'semantic_fpn_dat_t_40k.py': ('DAT-T', 'SemanticFPN'),
    'semantic_fpn_dat_s_40k.py': ('DAT-S', 'SemanticFPN'),
    'semantic_fpn_dat_b_40k.py': ('DAT-B', 'SemanticFPN'),
    'upernet_dat_t_160k.py': ('DAT-T', 'UperNet'),
    'upernet_dat_s_160k.py': ('DAT-S', 'UperNet'),
    'upernet_dat_b_160k.py': ('DAT-B', 'UperNet'),
}
#: Table 5's Swin rows -> mmseg's own configs (the FLOP-counting convention's reference)
SWIN_CONFIGS = {
    'Swin-T': 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    'Swin-S': 'mmseg::swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    'Swin-B': 'mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
}


def table5_row(backbone, head):
    rows = [r for r in paper_tables()['table5_ade20k']
            if r['backbone'] == backbone and r['head'] == head]
    assert len(rows) == 1, f'Table 5: {len(rows)} rows for {backbone} + {head}'
    return rows[0]


def paper_row(config):
    """The Table 5 row a config reproduces."""
    return table5_row(*CONFIGS[config])


def config_path(config):
    return osp.join(SEG_CONFIGS, config)


@functools.lru_cache(maxsize=None)
def load(config):
    return load_config(config_path(config))


@functools.lru_cache(maxsize=None)
def built(config):
    """Facts of the config's segmentor built with mmseg's registry (not kept: DAT-B is big)."""
    model = build_model(load(config))
    return dict(
        segmentor=type(model).__name__,
        backbone=type(model.backbone).__name__,
        decode_head=type(model.decode_head).__name__,
        auxiliary_head=type(getattr(model, 'auxiliary_head', None)).__name__,
        norms=sorted({type(m).__name__ for m in model.modules() if 'Norm' in type(m).__name__}),
        params=sum(p.numel() for p in model.parameters()))


@functools.lru_cache(maxsize=None)
def complexity(config):
    """``mmdat.utils.complexity.model_complexity`` at 512x2048 (Table 5's resolution)."""
    path = config if '::' in config else config_path(config)
    return model_complexity(path)


def metafile_models():
    with open(METAFILE) as f:
        return {m['Name']: m for m in yaml.safe_load(f)['Models']}


def metafile_entry(config):
    entries = [m for m in metafile_models().values()
               if m['Config'] == f'configs/segmentation/{config}']
    assert len(entries) == 1, f'metafile.yml: {len(entries)} entries for {config}'
    return entries[0]


# ------------------------------------------------------------------------------ short runs
def short_run_options(data_root, crop=64):
    """``--cfg-options`` turning a paper config into a CPU run of a few iterations on a tiny
    ADE20K-layout dataset (README): no pretrained weights, ``crop`` x ``crop`` training crops,
    batch 2, test images resized to fit 160x72 (72x95 for 75x99 images: an odd size, whole
    image), no data-loading workers, checkpoints without the optimizer state. SyncBN needs no change: mmengine's runner reverts it to
    BatchNorm when not distributed."""
    test = {
        'dataset.data_root': data_root,
        'dataset.pipeline.1.scale': (160, 72),  # Resize(scale=(2048, 512), keep_ratio=True)
        'num_workers': 0,
        'persistent_workers': False,
    }
    options = {
        'model.backbone.init_cfg': None,
        'model.data_preprocessor.size': (crop, crop),
        'train_dataloader.dataset.data_root': data_root,
        # RandomResize(scale=(2048, 512)) and RandomCrop(crop_size=(512, 512))
        'train_dataloader.dataset.pipeline.2.scale': (4 * crop, crop),
        'train_dataloader.dataset.pipeline.3.crop_size': (crop, crop),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_cfg.max_iters': 2,
        'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.checkpoint.save_optimizer': False,
        'default_hooks.logger.interval': 1,
    }
    for loader in ('val_dataloader', 'test_dataloader'):
        options.update({f'{loader}.{k}': v for k, v in test.items()})
    return options


def cli_options(options):
    """``--cfg-options`` arguments (``key=value``, tuples without spaces)."""
    return ['--cfg-options'] + [
        f"{k}={str(v).replace(' ', '')}" for k, v in options.items()]


def run_tool(args, timeout=600):
    """``python <args>`` from the repository root; (returncode, stdout + stderr, seconds)."""
    start = time.time()
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, 'OMP_NUM_THREADS': '2'})
    return proc.returncode, proc.stdout + proc.stderr, time.time() - start


#: the metrics line mmengine logs after mmseg's IoUMetric
METRICS = re.compile(r'Iter\((?:test|val)\) \[\d+/\d+\]\s+aAcc: (?P<aAcc>[\d.]+)\s+'
                     r'mIoU: (?P<mIoU>[\d.]+)\s+mAcc: (?P<mAcc>[\d.]+)')


def printed_metrics(log):
    """{'aAcc', 'mIoU', 'mAcc'} of the last IoUMetric summary in a tools/*.py log."""
    found = list(METRICS.finditer(log))
    assert found, 'no IoUMetric summary (aAcc / mIoU / mAcc) in the log:\n' + log[-3000:]
    return {k: float(v) for k, v in found[-1].groupdict().items()}
