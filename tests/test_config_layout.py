"""One place per fact: the layout of the COCO / ADE20K configs (DAT and DAT++).

A row config states only what its row changes: its bases (the detector / segmentor with its
protocol, the data and schedule for detection, the backbone's architecture file) and its own
numbers (stochastic depth; fp32 or the batch where the authors changed them). Each
architecture's backbone settings live in ``configs/_base_/backbones``, each protocol's optimizer
and schedule in one base. Checked here on the files and on the resolved configs:

* rows only compose (no arch, widths, checkpoint, optimizer or schedule in them);
* a 3x config differs from its 1x sibling only in the schedule, the augmentation (DAT's 3x
  adds DETR's) and the stochastic depth;
* a DAT-S/B(++) config differs from its DAT-T(++) sibling only in the backbone (arch,
  checkpoint, widths), the stochastic depth, and the authors' fp32 / batch changes.
"""
import ast
import functools
import glob
import os.path as osp
import re

import pytest

from mmdat.utils.complexity import load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DENSE = sorted(glob.glob(osp.join(ROOT, 'configs', 'detection', '*.py')) +
               glob.glob(osp.join(ROOT, 'configs', 'segmentation', '*.py')))
ROWS = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in DENSE]


@functools.lru_cache(maxsize=None)
def resolved(row):
    return load_config(osp.join(ROOT, 'configs', row)).to_dict()


def differences(a, b, path=''):
    """The paths where two resolved configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f'{path}.{key}'.lstrip('.'))
            else:
                out += differences(a[key], b[key], f'{path}.{key}')
        return out
    return [] if a == b else [path.lstrip('.')]


@pytest.mark.parametrize('row', ROWS)
def test_rows_only_compose(row):
    with open(osp.join(ROOT, 'configs', row)) as f:
        source = f.read()
    names = {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
             for t in node.targets}
    assert names <= {'_base_', 'model', 'optim_wrapper', 'train_dataloader'}, names
    bases = ast.literal_eval(next(n.value for n in ast.parse(source).body
                                  if isinstance(n, ast.Assign) and n.targets[0].id == '_base_'))
    backbones = [b for b in bases if '/_base_/backbones/' in b]
    assert len(backbones) == 1, bases  # the backbone comes from its architecture file
    assert 'backbone=dict(_base_.dat.backbone, drop_path_rate=' in source
    assert re.search(r'in_channels=_base_\.dat\.channels', source)
    for fact in ('arch=', 'checkpoint', 'in_channels=[', 'lr=', 'max_epochs', 'milestones',
                 'pipeline'):
        assert fact not in source, f'{row} states {fact!r} (a base holds it)'
    for wrapper in re.findall(r"optim_wrapper = dict\(([^)]*)\)", source):
        assert wrapper == "type='OptimWrapper'"  # the authors' fp32 rows


def siblings(pattern, replace):
    """(row, sibling) pairs whose names differ by ``pattern`` -> ``replace``."""
    return [pytest.param(r, re.sub(pattern, replace, r), id=r) for r in ROWS
            if re.search(pattern, r) and re.sub(pattern, replace, r) in ROWS]


@pytest.mark.parametrize('row,sibling', siblings(r'_3x\.py$', '_1x.py'))
def test_3x_differs_from_1x_in_schedule_and_augmentation(row, sibling):
    allowed = {'max_epochs', 'train_cfg.max_epochs', 'param_scheduler',
               'model.backbone.drop_path_rate'}
    if '_dat_pp_' not in row:  # DAT's 3x adds DETR's augmentation (DAT++ has it in 1x too)
        allowed |= {'train_pipeline', 'train_dataloader.dataset.pipeline', 'detr_augmentation'}
    diff = set(differences(resolved(sibling), resolved(row)))
    assert diff <= allowed, sorted(diff - allowed)
    assert {'train_cfg.max_epochs', 'param_scheduler'} <= diff


@pytest.mark.parametrize('row,sibling', siblings(r'_(s|b)_(\w+)\.py$', r'_t_\2.py'))
def test_larger_backbones_differ_only_in_the_backbone(row, sibling):
    diff = set(differences(resolved(sibling), resolved(row)))
    allowed = {'dat.backbone.arch', 'dat.backbone.init_cfg.checkpoint', 'dat.channels',
               'model.backbone.arch', 'model.backbone.init_cfg.checkpoint',
               'model.backbone.drop_path_rate', 'model.neck.in_channels',
               'model.decode_head.in_channels', 'model.auxiliary_head.in_channels',
               'optim_wrapper.type', 'train_dataloader.batch_size'}
    assert diff <= allowed, sorted(diff - allowed)
    assert {'model.backbone.arch', 'model.backbone.init_cfg.checkpoint'} <= diff
