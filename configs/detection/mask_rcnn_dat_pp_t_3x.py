# DAT-T++ + Mask R-CNN on COCO, 3x schedule (36 epochs): the authors' mrcn_tiny_3x_4n_dp03_lr4
# (their README: 50.5 box AP, 45.1 mask AP). The authors' protocol:
# configs/_base_/detection/mask_rcnn_dat_pp.py.
_base_ = [
    '../_base_/detection/mask_rcnn_dat_pp.py',
    '../_base_/datasets/coco_instance_detr_aug.py',
    '../_base_/schedules/coco_3x_dat_pp.py',
    '../_base_/backbones/dat_pp_t.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.3),
    neck=dict(in_channels=_base_.dat.channels))
