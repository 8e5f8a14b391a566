"""Train any mmdat config (classification, detection or segmentation).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--cfg-options k=v ...] [--launcher pytorch]
    python tools/train.py --help           # the options the three toolboxes share
    python tools/train.py CONFIG --help    # all the options of the config's toolbox

Dispatches on the config's ``default_scope`` to mmpretrain's, mmdet's or mmseg's own
``tools/train.py`` (same options) with mmdat registered.
"""
import importlib.util
import os.path as osp
import sys

# a source checkout's mmdat comes first (also when run through the mmdat/.mim/tools link)
ROOT = osp.dirname(osp.dirname(osp.realpath(__file__)))
if osp.isfile(osp.join(ROOT, 'mmdat', '__init__.py')):
    sys.path.insert(0, ROOT)


def load_toolbox_module():
    """mmdat/utils/toolbox.py, loaded by its path: ``--help`` answers without importing
    mmdat (torch and the toolboxes, seconds), which happens once a config is given."""
    package = importlib.util.find_spec('mmdat')
    if package is None:
        raise SystemExit(f'{osp.basename(__file__)}: mmdat is not installed (and this is not '
                         'a source checkout of it)')
    path = osp.join(package.submodule_search_locations[0], 'utils', 'toolbox.py')
    spec = importlib.util.spec_from_file_location('mmdat_toolbox', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == '__main__':
    load_toolbox_module().run_toolbox_tool('train', sys.argv[1:])
