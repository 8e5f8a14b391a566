"""Run a toolbox's own ``tools/*.py`` for a config, with mmdat registered.

mmpretrain, mmdet and mmseg ship their ``tools/`` inside the package (``<pkg>/.mim/tools``).
mmdat's ``tools/train.py`` and ``tools/test.py`` pick the toolbox from the config's
``default_scope`` and run its script in-process after ``import mmdat``, so every familiar
option (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``, ``--launcher``, ``--out``,
``--show-dir``, ``--tta``, ...) behaves exactly as in that toolbox.

Without a config there is no toolbox to ask, so ``--help`` prints the options the three
toolboxes' scripts share (:func:`shared_options_parser`); ``CONFIG --help`` prints the
toolbox's own help, with all of its options.
"""
import argparse
import importlib
import os.path as osp
import runpy
import sys

#: default_scope -> the package whose tools serve it
TOOLBOXES = {'mmpretrain': 'mmpretrain', 'mmdet': 'mmdet', 'mmseg': 'mmseg'}

_DESCRIPTION = {
    'train': 'Train an mmdat config (classification, detection or segmentation).',
    'test': 'Test a checkpoint of an mmdat config (classification, detection or '
            'segmentation).',
}
_EPILOG = ("The config's default_scope picks the toolbox (mmpretrain, mmdet or mmseg) whose own "
           'tools/{tool}.py runs it, with mmdat registered. These are the options that the '
           "three toolboxes' scripts share; `{tool}.py CONFIG --help` lists all the options of "
           "the config's toolbox. Multi-process runs: tools/dist_{tool}.sh (torchrun), "
           'tools/slurm_{tool}.sh (srun).')


def shared_options_parser(tool):
    """An argparse parser holding the options that mmpretrain's, mmdet's and mmseg's
    ``tools/<tool>.py`` all accept (for ``--help`` and usage errors without a config; the
    toolbox's own parser reads the actual arguments)."""
    if tool not in _DESCRIPTION:
        raise ValueError(f'no shared options for tools/{tool}.py')
    parser = argparse.ArgumentParser(
        prog=f'{tool}.py', description=_DESCRIPTION[tool], epilog=_EPILOG.format(tool=tool))
    add = parser.add_argument
    add('config', metavar='CONFIG', help='config file (its default_scope picks the toolbox)')
    if tool == 'train':
        add('--work-dir', metavar='DIR', help='where logs and checkpoints are saved')
        add('--resume', nargs='?', const='auto', metavar='CHECKPOINT',
            help='resume from the latest checkpoint in the work dir (mmpretrain and mmdet '
                 'also take a CHECKPOINT to resume from)')
        add('--amp', action='store_true', help='automatic mixed-precision training')
    else:
        add('checkpoint', metavar='CHECKPOINT', help='checkpoint file')
        add('--work-dir', metavar='DIR', help='where the evaluation metrics are saved')
        add('--out', metavar='OUT', help='save the predictions (mmpretrain, mmdet: a pickle '
                                         'file; mmseg: a directory of label maps)')
        add('--show', action='store_true', help='show the predictions in a window')
        add('--show-dir', metavar='DIR', help='save the painted predictions under '
                                              'work_dir/timestamp/DIR')
        add('--wait-time', type=float, default=2, metavar='SECONDS',
            help='how long --show shows each image (default: 2)')
        add('--tta', action='store_true', help="test-time augmentation (the config's "
                                               'tta_model and tta_pipeline)')
    add('--cfg-options', nargs='+', metavar='KEY=VALUE',
        help='override config settings, e.g. train_cfg.max_epochs=2 '
             'train_dataloader.batch_size=8 (lists: key="[a,b]")')
    add('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher (default: none, a single process)')
    add('--local-rank', '--local_rank', type=int, default=0, metavar='RANK',
        help='set by torch.distributed.launch')
    return parser


def toolbox_of(config):
    """The toolbox package of a config file (its ``default_scope``)."""
    from mmengine.config import Config
    scope = Config.fromfile(config).get('default_scope')
    if scope not in TOOLBOXES:
        raise ValueError(f'{config}: default_scope is {scope!r}; mmdat runs configs of '
                         f'{sorted(TOOLBOXES)} (set default_scope in the config)')
    return TOOLBOXES[scope]


def toolbox_script(package, tool):
    """``<package>/.mim/tools/<tool>.py``, the toolbox's own script."""
    pkg_dir = osp.dirname(importlib.import_module(package).__file__)
    script = osp.join(pkg_dir, '.mim', 'tools', f'{tool}.py')
    if not osp.exists(script):
        raise FileNotFoundError(f'{package} does not ship tools/{tool}.py ({script})')
    return script


def run_toolbox_tool(tool, argv):
    """Run ``<toolbox>/.mim/tools/<tool>.py`` with ``argv`` (``argv[0]`` is the config).

    Without a config: ``-h``/``--help`` prints the shared options and exits 0; anything else
    is a usage error (exit 2), as with the toolboxes' own scripts."""
    configs = [a for a in argv if a.endswith('.py')]
    if not configs:
        parser = shared_options_parser(tool)
        if '-h' in argv or '--help' in argv:
            parser.print_help()
            raise SystemExit(0)
        parser.error('the following arguments are required: CONFIG (a .py config file)')
    import mmdat  # noqa: F401  (registers mmdat's models, applies compat fixes)
    script = toolbox_script(toolbox_of(configs[0]), tool)
    sys.argv = [script] + list(argv)
    runpy.run_path(script, run_name='__main__')
