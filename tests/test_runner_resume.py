"""mmengine's Runner trains a DAT model, resumes from its checkpoint and loads it with load_from.

torch >= 2.6 loads checkpoints weights-only; mmengine 0.10.7 writes numpy-holding message-hub
state into them. ``import mmdat`` makes these checkpoints loadable (mmdat.compat).
"""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmdat.datasets import make_classification

TINY = dict(embed_dims=[16, 32, 64, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 4],
            groups=[1, 1, 2, 2])


def make_cfg(data_root, work_dir, max_epochs):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    return Config(dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmdat'], allow_failed_imports=False),
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3,
                                   mean=[127.5] * 3, std=[64.] * 3, to_rgb=True),
            backbone=dict(type='DAT', arch=TINY, drop_path_rate=0.),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=64)),
        work_dir=work_dir,
        train_dataloader=dict(
            batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                         pipeline=pipeline)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        param_scheduler=[dict(type='CosineAnnealingLR', by_epoch=True, T_max=4)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        log_level='WARNING'))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_classification(str(tmp_path_factory.mktemp('cls')), num_train=12, num_val=0,
                               size=32, seed=1)


def test_checkpoint_is_weights_only_loadable(data_root, tmp_path):
    runner = Runner.from_cfg(make_cfg(data_root, str(tmp_path), max_epochs=1))
    runner.train()
    ckpt = osp.join(str(tmp_path), 'epoch_1.pth')
    # what mmengine's resume does under torch >= 2.6: a weights-only load
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert 'message_hub' in state and state['meta']['epoch'] == 1


def test_resume_and_load_from(data_root, tmp_path):
    work = str(tmp_path)
    Runner.from_cfg(make_cfg(data_root, work, max_epochs=2)).train()
    ckpt2 = torch.load(osp.join(work, 'epoch_2.pth'), map_location='cpu', weights_only=True)

    # resume=True picks up the latest checkpoint of the work dir and continues
    cfg = make_cfg(data_root, work, max_epochs=3)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 3 and runner.iter == 9  # 3 iterations per epoch, 2 resumed
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(work, 'epoch_*.pth'))) == [
        'epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    # the optimizer state came back too (AdamW steps continue from 6)
    ckpt3 = torch.load(osp.join(work, 'epoch_3.pth'), map_location='cpu', weights_only=True)
    step = next(iter(ckpt3['optimizer']['state'].values()))['step']
    assert float(step) == 9

    # load_from: weights only, training starts from epoch 0
    cfg = make_cfg(data_root, str(tmp_path / 'second'), max_epochs=1)
    cfg.load_from = osp.join(work, 'epoch_2.pth')
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    assert runner.epoch == 0
    for k, v in runner.model.state_dict().items():
        torch.testing.assert_close(v, ckpt2['state_dict'][k], msg=k)
