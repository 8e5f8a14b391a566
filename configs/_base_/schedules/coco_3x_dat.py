# 3x: 36 epochs, the lr divided by 10 after epochs 27 and 33 (warm-up as in 1x).
_base_ = './coco_1x_dat.py'
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=max_epochs, milestones=[27, 33]),
]
