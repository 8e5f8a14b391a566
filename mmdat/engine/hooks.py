"""Training hooks."""
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from ..registry import register_hook

#: what the generators are reseeded for; part of the seed so the streams differ
_PHASES = {'epoch': 0, 'fetch': 1, 'step': 2}


@register_hook()
class ResumableRandomnessHook(Hook):
    """Random numbers as a function of (seed, rank, epoch or iteration), so that a run
    resumed from a checkpoint draws the same random numbers as an uninterrupted run.

    MMEngine seeds the generators once when the runner starts. A checkpoint restores the
    model, optimizer, schedulers, epoch/iteration and the sampler's order, but not the
    states of the generators, so after ``--resume`` the drop-path masks (DAT's stochastic
    depth), Mixup/CutMix and main-process augmentations differ from those of the run that
    crashed, and the weights drift apart. This hook reseeds ``torch`` (every device),
    ``numpy`` and ``random`` at three points, from the run's seed, the process rank and
    the position in training:

    * ``before_train_epoch``: before the epoch's data iterator is made (its base seed
      comes from torch's generator);
    * ``after_train_iter``: before the next batch is loaded (augmentations in the main
      process, ``num_workers=0``);
    * ``before_train_iter``: before the training step (drop path, dropout, batch
      augmentations in the data preprocessor).

    A resumed epoch-based run (it resumes at an epoch boundary) therefore replays the
    uninterrupted run exactly. An iteration-based run replays the training steps exactly;
    its data loader, which MMEngine fast-forwards over the batches already seen, replays
    them only when the augmentation is done in worker processes. Workers are seeded by
    MMEngine from (seed, rank, worker id) when the data iterator starts; with
    ``persistent_workers=True`` they keep their generators across epochs, which a
    checkpoint cannot hold, so their augmentations are not replayed after a resume.

    Args:
        seed (int, optional): the base seed; defaults to the runner's seed
            (``randomness.seed``, or the one it drew).
    """

    priority = 'VERY_HIGH'  # before any other hook draws random numbers

    def __init__(self, seed=None):
        self.seed = seed

    def _reseed(self, runner, phase, index):
        base = runner.seed if self.seed is None else self.seed
        entropy = [int(base) % 2**32, get_rank(), _PHASES[phase], int(index)]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # CPU and every CUDA device

    def before_train_epoch(self, runner):
        self._reseed(runner, 'epoch', runner.epoch)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._reseed(runner, 'step', runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._reseed(runner, 'fetch', runner.iter + 1)
