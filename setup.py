"""mmdat: the Deformable Attention Transformer (DAT, CVPR 2022) for OpenMMLab."""
import importlib.util
import os.path as osp
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    ns = {}
    with open(osp.join(osp.dirname(__file__), 'mmdat', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def read_requirements(name):
    with open(osp.join(osp.dirname(__file__), 'requirements', name)) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


def add_mim_extension():
    """Fill ``mmdat/.mim`` (configs, tools, model-index.yml) for ``mim``: links for an
    editable install, copies for a wheel or sdist (see mmdat/utils/mim_extension.py, loaded
    by its path: importing mmdat needs torch)."""
    spec = importlib.util.spec_from_file_location(
        'mmdat_mim_extension', osp.join(HERE, 'mmdat', 'utils', 'mim_extension.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mode = module.mim_mode(sys.argv)
    if mode is not None:
        module.add_mim_extension(HERE, mode)


add_mim_extension()
setup(
    name='mmdat',
    version=read_version(),
    description='Deformable Attention Transformer (DAT) backbones for mmpretrain, mmdet and mmseg',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md')).read()
    if osp.exists(osp.join(osp.dirname(__file__), 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests')),
    python_requires='>=3.8',
    install_requires=['torch', 'torchvision', 'mmcv>=2.0.0,<2.2.0'] + read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    package_data={'mmdat': ['data/*.yaml']},
    include_package_data=True,  # mmdat/.mim, listed in MANIFEST.in
    license='Apache License 2.0',
    zip_safe=False,
)
