# The authors' DAT++ 3x: as DAT's (coco_3x_dat.py) with 500 linear warm-up iterations
# (mmdet's default), not 1000.
_base_ = './coco_3x_dat.py'
param_scheduler = [dict(_base_.param_scheduler[0], end=500), _base_.param_scheduler[1]]
