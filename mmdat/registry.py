"""mmdat's registries.

Every mmdat model (and hook) is registered **once**, in MMEngine's root ``MODELS`` registry
(:func:`register_model`). The registries of mmpretrain, mmdet and mmseg are children of
that root and search their parents, so ``type='DAT'`` resolves unscoped from any of the
three toolboxes' configs. The child registry below gives mmdat its own scope, so the
scoped name ``type='mmdat.DAT'`` resolves too (MMEngine finds scopes among the root's
children).
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

#: mmdat's scope. It holds nothing of its own: lookups fall through to the root.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmdat', locations=['mmdat.models'])

#: The single registration point for mmdat's models (a decorator).
register_model = MMENGINE_MODELS.register_module

#: mmdat's hooks, the same way (``type='ResumableRandomnessHook'`` from any toolbox's config).
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmdat', locations=['mmdat.engine'])
register_hook = MMENGINE_HOOKS.register_module
