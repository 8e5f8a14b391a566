"""Helpers of the distributed-launch tests (tests/test_dist.py, tests/test_slurm.py): a tiny
DAT classifier config on generated data whose probe hook records, per rank, the process
group and every training batch's image paths, and the checks of such a run."""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import textwrap

import torch

from mmdat.datasets import make_classification

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
NUM_TRAIN, NUM_VAL, EPOCHS = 8, 4, 2

PROBE = '''
"""Records, per rank, the process group and every training batch's image paths."""
import json
import os
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SampleProbeHook(Hook):

    def _path(self, runner, name):
        return osp.join(runner.work_dir, f'{name}_rank{torch_dist.get_rank()}')

    def before_train(self, runner):
        model = runner.model
        with open(self._path(runner, 'group') + '.json', 'w') as f:
            json.dump(dict(backend=torch_dist.get_backend(),
                           world_size=torch_dist.get_world_size(),
                           wrapper=type(model).__name__,
                           device_ids=getattr(model, 'device_ids', 'n/a'),
                           env={k: os.environ.get(k) for k in (
                               'RANK', 'LOCAL_RANK', 'GROUP_RANK', 'WORLD_SIZE')}), f)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        paths = [s.img_path for s in data_batch['data_samples']]
        with open(self._path(runner, 'samples') + '.jsonl', 'a') as f:
            f.write(json.dumps(dict(epoch=runner.epoch, paths=paths)) + '\\n')

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(model.state_dict(), self._path(runner, 'weights') + '.pth')
'''

CONFIG = '''
_base_ = 'mmpretrain::_base_/default_runtime.py'  # env_cfg.dist_cfg.backend = 'nccl'
custom_imports = dict(imports=['mmdat', 'sample_probe'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3, mean=[127.5] * 3,
                           std=[64.] * 3, to_rgb=True),
    backbone=dict(type='DAT', drop_path_rate=0., arch=dict(
        embed_dims=[16, 32, 64, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 4],
        groups=[1, 1, 2, 2])),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=64))
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root={root!r}, data_prefix='train',
                 pipeline=pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root={root!r}, data_prefix='val',
                 pipeline=pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
train_cfg = dict(by_epoch=True, max_epochs={epochs}, val_interval={epochs})
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
default_hooks = dict(logger=dict(type='LoggerHook', interval=1),
                     checkpoint=dict(type='CheckpointHook', interval=1))
custom_hooks = [dict(type='SampleProbeHook')]
randomness = dict(seed=0)
'''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def probe_setup(tmp_path):
    """Generated data, the probe hook module and the config in ``tmp_path`` (the runs' working
    directory, so that ``custom_imports`` finds ``sample_probe``); returns (config, data root).
    """
    root = make_classification(str(tmp_path / 'data'), num_train=NUM_TRAIN, num_val=NUM_VAL,
                               size=32, seed=0)
    (tmp_path / 'sample_probe.py').write_text(PROBE)
    config = tmp_path / 'dist_cfg.py'
    config.write_text(textwrap.dedent(CONFIG.format(root=root, epochs=EPOCHS)))
    return config, root


def launch_env(cwd, **extra):
    """The environment of a launch script: this interpreter, this checkout first on the path,
    a free port, and no GPU even where there is one."""
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               PYTHONPATH=os.pathsep.join([REPO, cwd, os.environ.get('PYTHONPATH', '')]),
               CUDA_VISIBLE_DEVICES='')
    env.update(extra)
    return env


def launch(script, *args, cwd, env=None):
    """Run ``tools/<script>`` and return its output; fails the test on a non-zero exit."""
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', script), *args], cwd=cwd,
                          env=env or launch_env(cwd), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def check_group(work, world_size):
    """Every rank ran in a gloo group of ``world_size`` with the CPU DDP wrapper; returns, per
    rank, the launcher's environment (RANK, LOCAL_RANK, GROUP_RANK, WORLD_SIZE)."""
    envs = []
    for rank in range(world_size):
        group = json.loads((work / f'group_rank{rank}.json').read_text())
        envs.append(group.pop('env'))
        assert group == dict(backend='gloo', world_size=world_size,
                             wrapper='MMDistributedDataParallel', device_ids=None), rank
        assert envs[-1]['RANK'] == str(rank) and envs[-1]['WORLD_SIZE'] == str(world_size)
    return envs


def check_training(work, root, world_size):
    """The ranks drew disjoint shares of the training set each epoch, ended with the same
    weights, and one checkpoint was written per save, holding them."""
    seen = {}
    for rank in range(world_size):
        for line in (work / f'samples_rank{rank}.jsonl').read_text().splitlines():
            rec = json.loads(line)
            seen.setdefault((rec['epoch'], rank), []).extend(rec['paths'])
    train_files = {osp.abspath(p) for p in glob.glob(osp.join(root, 'train', '*', '*.png'))}
    assert len(train_files) == NUM_TRAIN
    for epoch in range(EPOCHS):
        shares = [seen[(epoch, rank)] for rank in range(world_size)]
        assert all(len(s) == NUM_TRAIN // world_size for s in shares), epoch
        drawn = [osp.abspath(p) for s in shares for p in s]
        assert len(set(drawn)) == len(drawn), f'epoch {epoch}: ranks read the same images'
        assert set(drawn) == train_files
    # gradients were all-reduced: every replica ends with the same weights
    weights = [torch.load(work / f'weights_rank{rank}.pth', weights_only=True)
               for rank in range(world_size)]
    for other in weights[1:]:
        for key in weights[0]:
            torch.testing.assert_close(other[key], weights[0][key], rtol=0, atol=0, msg=key)
    # one checkpoint per save (rank 0 writes), holding the trained weights
    ckpts = sorted(osp.basename(p) for p in glob.glob(str(work / '*.pth')))
    assert ckpts == [f'epoch_{e}.pth' for e in range(1, EPOCHS + 1)] + [
        f'weights_rank{rank}.pth' for rank in range(world_size)]
    last = torch.load(work / f'epoch_{EPOCHS}.pth', map_location='cpu', weights_only=True)
    assert last['meta']['epoch'] == EPOCHS
    for key, value in last['state_dict'].items():
        torch.testing.assert_close(value, weights[0][key], rtol=0, atol=0, msg=key)
    return work / f'epoch_{EPOCHS}.pth'
