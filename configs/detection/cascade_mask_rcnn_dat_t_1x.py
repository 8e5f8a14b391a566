# DAT-T + Cascade Mask R-CNN on COCO, 1x schedule (Table 4b: 49.1 box AP, 42.5 mask AP, 750
# GFLOPs, 86 M params). The Swin detection protocol
# (configs/_base_/detection/cascade_mask_rcnn_dat.py): AdamW lr 1e-4 per 16 images, 12 epochs;
# stochastic depth 0.2 as Swin-T in Swin's detection configs.
_base_ = [
    '../_base_/detection/cascade_mask_rcnn_dat.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/coco_1x_dat.py',
    '../_base_/backbones/dat_t.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.2),
    neck=dict(in_channels=_base_.dat.channels))
