"""The ``mmdat/.mim`` folder: what OpenMMLab packages ship for ``mim`` (openmim).

``mim search / train / test PACKAGE`` read ``<package>/.mim/model-index.yml`` (and the
``metafile.yml`` files it lists), look configs up under ``<package>/.mim/configs`` and run
``<package>/.mim/tools/{train,test}.py``. As in mmpretrain's and mmdet's ``setup.py``, mmdat's
``setup.py`` fills the folder when it builds the package: symbolic links to the repository's
``configs``, ``tools`` and ``model-index.yml`` for an editable install (``pip install -e .``),
copies for a wheel or a source distribution (``pip install .``). The folder is generated
(ignored by git).

This module uses the standard library only, so that ``setup.py`` can load it by its path
before anything is installed.
"""
import os
import os.path as osp
import platform
import shutil

#: what ``mmdat/.mim`` holds, relative to the repository root
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def mim_mode(argv):
    """How ``setup.py`` run with ``argv`` makes ``.mim``: ``'symlink'`` (editable install),
    ``'copy'`` (wheel or sdist) or ``None`` (other commands, e.g. ``egg_info``)."""
    if 'develop' in argv or 'editable_wheel' in argv:  # pip install -e . (legacy / PEP 660)
        return 'copy' if platform.system() == 'Windows' else 'symlink'
    if 'bdist_wheel' in argv or 'sdist' in argv:  # pip install . / python -m build
        return 'copy'
    return None


def add_mim_extension(repo, mode='symlink'):
    """Make ``<repo>/mmdat/.mim`` with links to (``mode='symlink'``) or copies of
    (``mode='copy'``) ``configs``, ``tools`` and ``model-index.yml``; returns its path.

    A source that is missing (e.g. in an unpacked sdist, whose ``.mim`` is already filled)
    leaves the existing entry as it is."""
    if mode not in ('symlink', 'copy'):
        raise ValueError(f'mode must be "symlink" or "copy", not {mode!r}')
    mim_dir = osp.join(repo, 'mmdat', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(repo, name), osp.join(mim_dir, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)
    return mim_dir
