"""Distributed runs on a host without GPUs: ``tools/dist_train.sh`` / ``tools/dist_test.sh``.

mmengine 0.10.7 assumes one GPU per process (``torch.cuda.set_device``, the config's nccl
backend, ``device_ids=[LOCAL_RANK]`` for DDP). ``import mmdat`` (mmdat.compat) makes the same
commands run with gloo on CPU processes. The end-to-end test launches 2 processes with
torchrun on generated data and checks, through a probe hook imported by the config, that:

* the process group really is gloo with 2 ranks;
* the two ranks train on disjoint halves of the data each epoch;
* DDP keeps their weights identical, and only one checkpoint is written per save;
* ``dist_test.sh`` evaluates the checkpoint with 2 processes and prints the accuracy.
"""
import glob
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as torch_dist

from mmdat.datasets import make_classification

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
NUM_TRAIN, NUM_VAL, EPOCHS = 8, 4, 2

PROBE = '''
"""Records, per rank, the process group and every training batch's image paths."""
import json
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
                           device_ids=getattr(model, 'device_ids', 'n/a')), f)

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


def launch(script, *args, cwd):
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               PYTHONPATH=os.pathsep.join([cwd, os.environ.get('PYTHONPATH', '')]),
               CUDA_VISIBLE_DEVICES='')  # a CPU-only host, even where GPUs exist
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def test_dist_train_and_test_on_cpu_with_gloo(tmp_path):
    root = make_classification(str(tmp_path / 'data'), num_train=NUM_TRAIN, num_val=NUM_VAL,
                               size=32, seed=0)
    (tmp_path / 'sample_probe.py').write_text(PROBE)
    config = tmp_path / 'dist_cfg.py'
    config.write_text(textwrap.dedent(CONFIG.format(root=root, epochs=EPOCHS)))
    work = tmp_path / 'work'

    launch('dist_train.sh', str(config), '2', '--work-dir', str(work), cwd=str(tmp_path))

    for rank in (0, 1):
        group = json.loads((work / f'group_rank{rank}.json').read_text())
        assert group == dict(backend='gloo', world_size=2, wrapper='MMDistributedDataParallel',
                             device_ids=None)
    # each epoch, the ranks draw disjoint halves of the training set
    seen = {}
    for rank in (0, 1):
        for line in (work / f'samples_rank{rank}.jsonl').read_text().splitlines():
            rec = json.loads(line)
            seen.setdefault((rec['epoch'], rank), []).extend(rec['paths'])
    train_files = {osp.abspath(p) for p in glob.glob(osp.join(root, 'train', '*', '*.png'))}
    assert len(train_files) == NUM_TRAIN
    for epoch in range(EPOCHS):
        r0, r1 = seen[(epoch, 0)], seen[(epoch, 1)]
        assert len(r0) == len(r1) == NUM_TRAIN // 2
        assert not set(r0) & set(r1), f'epoch {epoch}: both ranks read {set(r0) & set(r1)}'
        assert {osp.abspath(p) for p in r0 + r1} == train_files
    # gradients were all-reduced: both replicas end with the same weights, which changed
    w0 = torch.load(work / 'weights_rank0.pth', weights_only=True)
    w1 = torch.load(work / 'weights_rank1.pth', weights_only=True)
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=key)
    # one checkpoint per save (rank 0 writes), holding the trained weights
    ckpts = sorted(osp.basename(p) for p in glob.glob(str(work / '*.pth')))
    assert ckpts == [f'epoch_{e}.pth' for e in range(1, EPOCHS + 1)] + [
        'weights_rank0.pth', 'weights_rank1.pth']
    last = torch.load(work / f'epoch_{EPOCHS}.pth', map_location='cpu', weights_only=True)
    assert last['meta']['epoch'] == EPOCHS
    for key, value in last['state_dict'].items():
        torch.testing.assert_close(value, w0[key], rtol=0, atol=0, msg=key)

    out = launch('dist_test.sh', str(config), str(work / f'epoch_{EPOCHS}.pth'), '2',
                 '--work-dir', str(work / 'test'), cwd=str(tmp_path))
    acc = re.search(r'Epoch\(test\).*accuracy/top1: ([\d.]+)', out)
    assert acc, out[-3000:]
    assert 0 <= float(acc.group(1)) <= 100


@pytest.fixture
def gloo_group(tmp_path):
    """A one-process gloo group in this process, torn down afterwards."""
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                                  world_size=1)
    yield
    torch_dist.destroy_process_group()


def test_ddp_wrapper_on_cpu_modules(gloo_group):
    """What Runner.wrap_model passes (device_ids=[LOCAL_RANK]) works for CPU modules, and
    SyncBN, which needs GPUs, becomes BatchNorm."""
    from mmengine.model import MMDistributedDataParallel
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.SyncBatchNorm(4))
    ddp = MMDistributedDataParallel(module=module, device_ids=[0], broadcast_buffers=False)
    assert ddp.device_ids is None
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in ddp.modules())
    assert isinstance(ddp.module[1], torch.nn.modules.batchnorm._BatchNorm)
    ddp.train()(torch.randn(2, 3, 8, 8)).sum().backward()
    assert module[0].weight.grad is not None


def test_init_dist_uses_gloo_without_gpus(monkeypatch):
    """mmengine's pytorch-launcher init with the toolboxes' default ``backend='nccl'``."""
    from mmengine.dist import utils as dist_utils
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'set_device', _fail_set_device)
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    dist_utils._init_dist_pytorch('nccl')
    try:
        assert torch_dist.get_backend() == 'gloo'
    finally:
        torch_dist.destroy_process_group()


def _fail_set_device(device):
    raise AssertionError(f'torch.cuda.set_device({device}) called on a host without GPUs')
