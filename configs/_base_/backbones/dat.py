# DAT (v1) in the COCO / ADE20K configs: r of the deformable blocks (stages 3-4; the entries
# of the shift-window stages 1-2 are unused) is 2 in stage 3 and 1 in stage 4, a 25x40 key
# grid in both stages at 1280x800, chosen to reproduce the FLOPs of Tables 3-5 (README).
_base_ = './dense.py'
dat = dict(backbone=dict(key_downsample=(4, 2, 2, 1)))
