# DAT-S + Mask R-CNN on COCO, 1x schedule (Table 4a: 47.1 box AP, 42.5 mask AP, 378 GFLOPs, 69 M
# params). The Swin detection protocol (configs/_base_/detection/mask_rcnn_dat.py): AdamW lr 1e-4
# per 16 images, 12 epochs; stochastic depth 0.2 as Swin-S in Swin's detection configs.
_base_ = [
    '../_base_/detection/mask_rcnn_dat.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/coco_1x_dat.py',
    '../_base_/backbones/dat_s.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.2),
    neck=dict(in_channels=_base_.dat.channels))
