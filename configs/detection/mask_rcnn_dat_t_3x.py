# DAT-T + Mask R-CNN on COCO, 3x schedule (Table 4a: 47.1 box AP, 42.4 mask AP, 272 GFLOPs, 48 M
# params). The Swin detection protocol (configs/_base_/detection/mask_rcnn_dat.py): AdamW lr 1e-4
# per 16 images, 36 epochs, multi-scale + random-crop training; stochastic depth 0.2 as Swin-T in
# Swin's detection configs.
_base_ = [
    '../_base_/detection/mask_rcnn_dat.py',
    '../_base_/datasets/coco_instance_detr_aug.py',
    '../_base_/schedules/coco_3x_dat.py',
    '../_base_/backbones/dat_t.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.2),
    neck=dict(in_channels=_base_.dat.channels))
