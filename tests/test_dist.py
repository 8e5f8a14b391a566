"""Distributed runs on a host without GPUs: ``tools/dist_train.sh`` / ``tools/dist_test.sh``.

mmengine 0.10.7 assumes one GPU per process (``torch.cuda.set_device``, the config's nccl
backend, ``device_ids=[LOCAL_RANK]`` for DDP). ``import mmdat`` (mmdat.compat) makes the same
commands run with gloo on CPU processes. The end-to-end tests launch torchrun on generated
data and check, through a probe hook imported by the config (tests/_dist_utils.py), that:

* the process group really is gloo with 2 ranks;
* the two ranks train on disjoint halves of the data each epoch;
* DDP keeps their weights identical, and only one checkpoint is written per save;
* ``dist_test.sh`` evaluates the checkpoint with 2 processes and prints the accuracy;
* the same holds for two "nodes" (NNODES=2, NODE_RANK 0 and 1, one process each) on this host.
"""
import os
import re
import signal
import subprocess

import pytest
import torch
import torch.distributed as torch_dist
from _dist_utils import (REPO, check_group, check_training, free_port, launch, launch_env,
                         probe_setup)


def test_dist_train_and_test_on_cpu_with_gloo(tmp_path):
    config, root = probe_setup(tmp_path)
    work = tmp_path / 'work'

    launch('dist_train.sh', str(config), '2', '--work-dir', str(work), cwd=str(tmp_path))

    envs = check_group(work, world_size=2)
    assert [(e['GROUP_RANK'], e['LOCAL_RANK']) for e in envs] == [('0', '0'), ('0', '1')]
    ckpt = check_training(work, root, world_size=2)

    out = launch('dist_test.sh', str(config), str(ckpt), '2',
                 '--work-dir', str(work / 'test'), cwd=str(tmp_path))
    acc = re.search(r'Epoch\(test\).*accuracy/top1: ([\d.]+)', out)
    assert acc, out[-3000:]
    assert 0 <= float(acc.group(1)) <= 100


def test_dist_train_on_two_nodes(tmp_path):
    """Multi-node: tools/dist_train.sh started once per node with NNODES=2, NODE_RANK 0/1 and
    node 0's MASTER_ADDR and PORT; here both "nodes" are this host, one CPU process each."""
    config, root = probe_setup(tmp_path)
    work = tmp_path / 'work'
    port = str(free_port())
    nodes = []
    for rank in (0, 1):
        env = launch_env(str(tmp_path), NNODES='2', NODE_RANK=str(rank),
                         MASTER_ADDR='127.0.0.1', PORT=port)
        log = open(tmp_path / f'node{rank}.log', 'w')
        nodes.append((subprocess.Popen(
            ['bash', f'{REPO}/tools/dist_train.sh', str(config), '1', '--work-dir', str(work)],
            cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True), log))
    try:
        codes = [proc.wait(timeout=600) for proc, _ in nodes]
    finally:
        for proc, log in nodes:
            if proc.poll() is None:  # a node left waiting for the other: end its whole group
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    logs = [(tmp_path / f'node{rank}.log').read_text() for rank in (0, 1)]
    assert codes == [0, 0], '\n\n'.join(log[-4000:] for log in logs)
    envs = check_group(work, world_size=2)
    # global rank = node rank here: one process (local rank 0) per node
    assert [(e['GROUP_RANK'], e['LOCAL_RANK']) for e in envs] == [('0', '0'), ('1', '0')]
    check_training(work, root, world_size=2)


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


def test_init_dist_slurm_uses_gloo_without_gpus(monkeypatch):
    """mmengine's slurm-launcher init (``--launcher slurm``): the rank, world size and local
    rank come from srun's variables, gloo replaces nccl and no device is selected."""
    from mmengine.dist import utils as dist_utils
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'set_device', _fail_set_device)
    for key in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'):
        monkeypatch.delenv(key, raising=False)
    for key, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
                           SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    dist_utils.init_dist('slurm', backend='nccl')
    try:
        assert torch_dist.get_backend() == 'gloo'
        assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK']) == (
            '0', '1', '0')
    finally:
        torch_dist.destroy_process_group()


def _fail_set_device(device):
    raise AssertionError(f'torch.cuda.set_device({device}) called on a host without GPUs')
