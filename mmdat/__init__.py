"""mmdat: the Deformable Attention Transformer (Xia et al., CVPR 2022) for OpenMMLab.

``import mmdat`` (or ``custom_imports = dict(imports=['mmdat'])`` in a config) registers
mmdat's models for mmpretrain, mmdet and mmseg configs and applies the environment
compatibility fixes of :mod:`mmdat.compat`.
"""
from .compat import apply_compat_fixes
from .version import __version__

apply_compat_fixes()

from . import engine, models  # noqa: E402,F401  (registers the hooks and models)
from .registry import MODELS  # noqa: E402

__all__ = ['__version__', 'MODELS']
