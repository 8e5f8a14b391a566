"""Test a checkpoint of any mmdat config (classification, detection or segmentation).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR]
                                           [--tta] [--cfg-options k=v ...] [--launcher pytorch]

Dispatches on the config's ``default_scope`` to mmpretrain's, mmdet's or mmseg's own
``tools/test.py`` (same options) with mmdat registered.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmdat.utils import run_toolbox_tool  # noqa: E402

if __name__ == '__main__':
    run_toolbox_tool('test', sys.argv[1:])
