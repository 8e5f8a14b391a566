# DAT-S++ in the COCO / ADE20K configs: its arch, the widths of its four stages (what the
# necks and heads take) and its ImageNet-1k checkpoint (configs/classification/dat_pp_s_in1k.py,
# or the authors' converted with tools/model_converters/dat_to_mmdat.py). The DAT++ defaults
# of the arch (key strides r = 8, 4, 2, 1, ...) are the authors' COCO / ADE20K settings too.
_base_ = './dense.py'
dat = dict(
    backbone=dict(
        arch='small++', init_cfg=dict(checkpoint='checkpoints/dat_pp_s_in1k_224.pth')),
    channels=[96, 192, 384, 768])
