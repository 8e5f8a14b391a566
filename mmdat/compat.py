"""Environment compatibility fixes, applied once by ``import mmdat``.

torch >= 2.6 loads checkpoints with ``weights_only=True``. mmengine 0.10.7 writes, besides
tensors, its ``MessageHub`` state (``HistoryBuffer`` objects holding numpy arrays and
scalars) into every checkpoint, and loads with a plain ``torch.load``, so ``--resume`` and
``load_from`` of its own checkpoints fail with an ``UnpicklingError``.

Rather than turning the safe loader off:

* ``HistoryBuffer`` pickles its class-wide table of statistics methods, which pickle as
  ``getattr(HistoryBuffer, 'min')`` and the like (``getattr`` cannot be allowed safely). The
  four default methods are re-registered when a buffer is unpickled anyway, so the buffers
  that mmdat's runs write leave them out (custom methods are still written);
* the classes that remain (``HistoryBuffer``, numpy arrays, dtypes and scalars) are allowed
  through ``torch.serialization.add_safe_globals``.

Checkpoints holding anything else still fail, with torch's message naming the class.

A second fix lets ``tools/dist_train.sh`` / ``tools/dist_test.sh`` (torchrun, ``--launcher
pytorch``) and ``tools/slurm_train.sh`` / ``tools/slurm_test.sh`` (srun, ``--launcher slurm``)
run on hosts without GPUs: gloo instead of nccl, no ``torch.cuda.set_device``, and
``device_ids=None`` for the CPU model's DDP wrapper (see :func:`apply_cpu_distributed_fixes`).
"""
import numpy as np
import torch


def _numpy_globals():
    """The numpy objects pickled with arrays and scalars (np >= 2 moved them to np._core)."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
        np.bool_)]
    return [_reconstruct, scalar, np.ndarray, np.dtype] + dtype_classes


def safe_globals():
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer] + _numpy_globals()


def _history_buffer_getstate(self):
    """``HistoryBuffer.__getstate__`` without the default statistics methods (see above)."""
    from mmengine.logging import HistoryBuffer
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    custom = {name: fn for name, fn in self._statistics_methods.items()
              if getattr(HistoryBuffer, name, None) is not fn}
    if custom:
        state['statistics_methods'] = custom
    return state


def apply_compat_fixes():
    """Let torch's weights-only loader read the checkpoints of mmengine runs, and
    distributed runs work on CPU-only hosts (:func:`apply_cpu_distributed_fixes`)."""
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch >= 2.4
        add(safe_globals())
    apply_cpu_distributed_fixes()


# --------------------------------------------------------------------------------------------
# Distributed runs on hosts without GPUs (torchrun + gloo on CPU processes)
#
# mmengine 0.10.7 assumes a GPU per process when launched with ``--launcher pytorch`` or
# ``--launcher slurm``: ``_init_dist_pytorch`` and ``_init_dist_slurm`` call
# ``torch.cuda.set_device(LOCAL_RANK)`` and use the config's
# ``env_cfg.dist_cfg.backend`` (``'nccl'`` in every toolbox's default runtime), and
# ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to ``MMDistributedDataParallel``,
# which DDP rejects for CPU modules. Where CUDA (and no other accelerator mmengine knows) is
# available, nothing changes. Without one:
#
# * the process group starts with gloo (``'nccl'`` or no backend is replaced, with a warning;
#   an explicit ``'gloo'``/``'mpi'`` is kept) and no device is selected;
# * ``MMDistributedDataParallel`` wraps CPU modules with ``device_ids=None`` (what DDP
#   requires for them); ``SyncBatchNorm`` layers, which need a GPU, become plain BatchNorm
#   (each process then normalises with its own batch statistics), with a warning.
# --------------------------------------------------------------------------------------------
def _no_accelerator():
    from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
    return not (torch.cuda.is_available() or is_mlu_available() or is_npu_available()
                or is_musa_available())


def _cpu_backend(backend):
    """The process-group backend to use on a host without GPUs."""
    from mmengine.logging import print_log
    if backend in (None, 'nccl'):
        print_log(f'mmdat: no GPU available, using the gloo backend instead of {backend!r} '
                  'for distributed training', logger='current', level=30)
        return 'gloo'
    return backend


def _wrap_init_dist_pytorch(init_dist_pytorch):

    def _init_dist_pytorch(backend='nccl', init_backend='torch', **kwargs):
        if init_backend != 'torch' or not _no_accelerator():
            return init_dist_pytorch(backend, init_backend=init_backend, **kwargs)
        import torch.distributed as torch_dist
        torch_dist.init_process_group(backend=_cpu_backend(backend), **kwargs)

    _init_dist_pytorch.__wrapped__ = init_dist_pytorch
    _init_dist_pytorch.__doc__ = init_dist_pytorch.__doc__
    return _init_dist_pytorch


def _wrap_ddp_init(ddp_init):

    def __init__(self, module, *args, **kwargs):
        devices = {p.device.type for p in module.parameters()}
        if devices == {'cpu'}:
            from mmengine.logging import print_log
            from mmengine.model import revert_sync_batchnorm
            kwargs['device_ids'] = None
            kwargs['output_device'] = None
            if any('SyncBatchNorm' in type(m).__name__ for m in module.modules()):
                print_log('mmdat: SyncBatchNorm needs GPUs; the CPU processes use BatchNorm '
                          'with their own batch statistics', logger='current', level=30)
                module = revert_sync_batchnorm(module)
        ddp_init(self, module, *args, **kwargs)

    __init__.__wrapped__ = ddp_init
    return __init__


def _wrap_init_dist_slurm(init_dist_slurm):

    def _init_dist_slurm(backend='nccl', port=None, init_backend='torch', **kwargs):
        if init_backend != 'torch' or not _no_accelerator():
            return init_dist_slurm(backend, port=port, init_backend=init_backend, **kwargs)
        import os
        import subprocess

        import torch.distributed as torch_dist
        # the environment mmengine derives from srun's SLURM_* variables, as it does it
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:  # the first host of the job
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {os.environ["SLURM_NODELIST"]} | head -n1')
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        torch_dist.init_process_group(backend=_cpu_backend(backend), **kwargs)

    _init_dist_slurm.__wrapped__ = init_dist_slurm
    _init_dist_slurm.__doc__ = init_dist_slurm.__doc__
    return _init_dist_slurm


def apply_cpu_distributed_fixes():
    """Let ``--launcher pytorch`` and ``--launcher slurm`` runs (``tools/dist_*.sh``,
    ``tools/slurm_*.sh``) work on CPU-only hosts."""
    import mmengine.dist.utils as dist_utils
    from mmengine.model import MMDistributedDataParallel
    if not hasattr(dist_utils._init_dist_pytorch, '__wrapped__'):
        dist_utils._init_dist_pytorch = _wrap_init_dist_pytorch(dist_utils._init_dist_pytorch)
    if not hasattr(dist_utils._init_dist_slurm, '__wrapped__'):
        dist_utils._init_dist_slurm = _wrap_init_dist_slurm(dist_utils._init_dist_slurm)
    if '__wrapped__' not in vars(MMDistributedDataParallel.__init__):
        MMDistributedDataParallel.__init__ = _wrap_ddp_init(MMDistributedDataParallel.__init__)
