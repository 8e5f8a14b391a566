# DAT-T + RetinaNet on COCO, 3x schedule (Table 3: 45.6 box AP, 253 GFLOPs, 38 M params). The Swin
# detection protocol (configs/_base_/detection/retinanet_dat.py): AdamW lr 1e-4 per 16 images, 36
# epochs, multi-scale + random-crop training; stochastic depth 0.2 as Swin-T in Swin's detection
# configs.
_base_ = [
    '../_base_/detection/retinanet_dat.py',
    '../_base_/datasets/coco_detection_detr_aug.py',
    '../_base_/schedules/coco_3x_dat.py',
    '../_base_/backbones/dat_t.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.2),
    neck=dict(in_channels=_base_.dat.channels[1:]))
