"""mim (openmim): mmdat ships ``configs``, ``tools`` and ``model-index.yml`` in ``mmdat/.mim``
as the OpenMMLab packages do, so that ``mim search / train / test mmdat`` work.

The end-to-end tests build and install mmdat from this checkout (``pip install --target``, no
dependencies: the environment's are used) into a temporary folder put first on PYTHONPATH,
then run mim there: search lists the metafiles' models, train and test run a shipped config
(found by its name) on generated data.
"""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import yaml

from mmdat.datasets import make_classification
from mmdat.utils.mim_extension import MIM_FILES, add_mim_extension, mim_mode

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: what a build of mmdat reads from the checkout
SOURCES = ('setup.py', 'setup.cfg', 'README.md', 'MANIFEST.in', 'model-index.yml',
           'requirements', 'mmdat', 'configs', 'tools')


def tree(root, suffixes=('.py', '.sh', '.yml')):
    """Relative paths of the files under ``root`` with these suffixes."""
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, files in os.walk(root)
                  for f in files if f.endswith(suffixes))


# -------------------------------------------------------------------------- the .mim folder
def test_mim_mode_follows_setup_commands():
    assert mim_mode(['setup.py', 'editable_wheel', '--dist-dir', 'x']) == 'symlink'  # pip -e
    assert mim_mode(['setup.py', 'develop']) == 'symlink'
    assert mim_mode(['setup.py', 'bdist_wheel', '--dist-dir', 'x']) == 'copy'  # pip install .
    assert mim_mode(['setup.py', 'sdist']) == 'copy'
    assert mim_mode(['setup.py', 'egg_info']) is None


def test_add_mim_extension_links_then_copies(tmp_path):
    repo = tmp_path / 'repo'
    for name in ('configs/demo', 'tools', 'mmdat'):
        (repo / name).mkdir(parents=True)
    (repo / 'configs/demo/a.py').write_text('x = 1\n')
    (repo / 'tools/train.py').write_text('pass\n')
    (repo / 'model-index.yml').write_text('Import: []\n')

    mim = osp.join(repo, 'mmdat', '.mim')
    assert add_mim_extension(str(repo), 'symlink') == mim
    for name in MIM_FILES:
        assert os.readlink(osp.join(mim, name)) == osp.join('..', '..', name)  # relative
    assert open(osp.join(mim, 'configs/demo/a.py')).read() == 'x = 1\n'

    add_mim_extension(str(repo), 'copy')  # replaces the links with copies
    for name in MIM_FILES:
        assert not osp.islink(osp.join(mim, name))
    assert tree(osp.join(mim, 'configs')) == ['demo/a.py']
    assert open(osp.join(mim, 'model-index.yml')).read() == 'Import: []\n'

    add_mim_extension(str(repo), 'symlink')  # and back
    assert all(osp.islink(osp.join(mim, name)) for name in MIM_FILES)


# ------------------------------------------------------------------------ an installed mmdat
@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """mmdat built from this checkout (a copy, so that the build's copies of configs/tools
    into mmdat/.mim stay out of it) and installed into a temporary site folder."""
    tmp = tmp_path_factory.mktemp('mim')
    src, site = tmp / 'src', tmp / 'site'
    src.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim', '*.egg-info')
    for name in SOURCES:
        path = osp.join(REPO, name)
        if osp.isdir(path):
            shutil.copytree(path, src / name, ignore=ignore)
        elif osp.exists(path):
            shutil.copy(path, src / name)
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', '--no-deps',
         '--no-build-isolation', '--no-index', '--target', str(site), str(src)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return site


def mim(site, *args, cwd):
    """``python -m mim ARGS`` with the installed mmdat first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get(
        'PYTHONPATH', '')]), CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, '-m', 'mim', *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def test_package_ships_mim_folder(installed):
    mim_dir = installed / 'mmdat' / '.mim'
    for name in MIM_FILES:
        assert (mim_dir / name).exists() and not (mim_dir / name).is_symlink(), name
    assert tree(mim_dir / 'configs') == tree(osp.join(REPO, 'configs'))
    assert tree(mim_dir / 'tools', ('.py', '.sh')) == tree(osp.join(REPO, 'tools'),
                                                          ('.py', '.sh'))
    assert (mim_dir / 'model-index.yml').read_text() == open(
        osp.join(REPO, 'model-index.yml')).read()


def metafile_models():
    with open(osp.join(REPO, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    models = {}
    for path in imports:
        with open(osp.join(REPO, path)) as f:
            models.update({m['Name']: m for m in yaml.safe_load(f)['Models']})
    return models


def test_mim_search_lists_the_models(installed, tmp_path):
    models = metafile_models()
    out = mim(installed, 'search', 'mmdat', cwd=tmp_path)
    for name in models:
        assert name in out, name

    mim(installed, 'search', 'mmdat', '--json', str(tmp_path / 'models.json'), cwd=tmp_path)
    found = json.loads((tmp_path / 'models.json').read_text())  # {field: {model: value}}
    assert set(found['config']) == set(models)
    for name, model in models.items():
        assert found['config'][name] == model['Config']
        assert found['parameters'][name] == model['Metadata']['Parameters']
        assert found['flops'][name] == model['Metadata']['FLOPs']
        for result in model['Results']:
            for metric, value in result['Metrics'].items():
                key = f"{result['Dataset'].lower()}/{'_'.join(metric.split()).lower()}"
                assert found[key][name] == value, (name, key)


def test_mim_train_and_test(installed, tmp_path):
    """A shipped config named without its path: mim finds it in mmdat/.mim/configs and runs
    mmdat/.mim/tools/{train,test}.py. The config reads work_dirs/demo/data/shapes_cls."""
    make_classification(str(tmp_path / 'work_dirs/demo/data/shapes_cls'), num_train=8,
                        num_val=4, size=64, seed=0)
    loaders = [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
               for key in ('num_workers=0', 'persistent_workers=False')]
    work = tmp_path / 'work'
    out = mim(installed, 'train', 'mmdat', 'dat_nano_shapes_cls.py', '--work-dir', str(work),
              '--cfg-options', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
              'default_hooks.checkpoint.interval=2', *loaders, cwd=tmp_path)
    mim_root = osp.join(str(installed), 'mmdat', '.mim')
    assert f"will use {osp.join(mim_root, 'configs/demo/dat_nano_shapes_cls.py')}" in out
    assert f"{osp.join(mim_root, 'tools/train.py')} " in out
    assert 'Training finished successfully' in out
    ckpt = work / 'epoch_2.pth'
    assert ckpt.exists()

    out = mim(installed, 'test', 'mmdat', 'dat_nano_shapes_cls.py', '--checkpoint', str(ckpt),
              '--work-dir', str(work / 'test'), '--cfg-options', *loaders[-2:], cwd=tmp_path)
    assert f"{osp.join(mim_root, 'tools/test.py')} " in out
    assert 'accuracy/top1' in out and 'Testing finished successfully' in out
