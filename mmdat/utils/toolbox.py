"""Run a toolbox's own ``tools/*.py`` for a config, with mmdat registered.

mmpretrain, mmdet and mmseg ship their ``tools/`` inside the package (``<pkg>/.mim/tools``).
mmdat's ``tools/train.py`` and ``tools/test.py`` pick the toolbox from the config's
``default_scope`` and run its script in-process after ``import mmdat``, so every familiar
option (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``, ``--launcher``, ``--out``,
``--show-dir``, ``--tta``, ...) behaves exactly as in that toolbox.
"""
import importlib
import os.path as osp
import runpy
import sys

#: default_scope -> the package whose tools serve it
TOOLBOXES = {'mmpretrain': 'mmpretrain', 'mmdet': 'mmdet', 'mmseg': 'mmseg'}


def toolbox_of(config):
    """The toolbox package of a config file (its ``default_scope``)."""
    from mmengine.config import Config
    scope = Config.fromfile(config).get('default_scope')
    if scope not in TOOLBOXES:
        raise ValueError(f'{config}: default_scope is {scope!r}; mmdat runs configs of '
                         f'{sorted(TOOLBOXES)} (set default_scope in the config)')
    return TOOLBOXES[scope]


def run_toolbox_tool(tool, argv):
    """Run ``<toolbox>/.mim/tools/<tool>.py`` with ``argv`` (``argv[0]`` is the config)."""
    import mmdat  # noqa: F401  (registers mmdat's models, applies compat fixes)
    configs = [a for a in argv if a.endswith('.py')]
    if not configs:
        raise SystemExit(f'usage: {tool}.py CONFIG [options]: no config file given')
    package = toolbox_of(configs[0])
    pkg_dir = osp.dirname(importlib.import_module(package).__file__)
    script = osp.join(pkg_dir, '.mim', 'tools', f'{tool}.py')
    if not osp.exists(script):
        raise FileNotFoundError(f'{package} does not ship tools/{tool}.py ({script})')
    sys.argv = [script] + list(argv)
    runpy.run_path(script, run_name='__main__')
