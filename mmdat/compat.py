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
    """Let torch's weights-only loader read the checkpoints of mmengine runs."""
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch >= 2.4
        add(safe_globals())
