# DAT-T + Cascade Mask R-CNN on COCO, 3x schedule (Table 4b: 51.3 box AP, 44.5 mask AP, 750
# GFLOPs, 86 M params). The Swin detection protocol
# (configs/_base_/detection/cascade_mask_rcnn_dat.py): AdamW lr 1e-4 per 16 images, 36 epochs,
# multi-scale + random-crop training; stochastic depth 0.2 as Swin-T in Swin's detection configs.
_base_ = [
    '../_base_/detection/cascade_mask_rcnn_dat.py',
    '../_base_/datasets/coco_instance_detr_aug.py',
    '../_base_/schedules/coco_3x_dat.py',
    '../_base_/backbones/dat_t.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.2),
    neck=dict(in_channels=_base_.dat.channels))
