# DAT-T++ + Cascade Mask R-CNN on COCO, 1x schedule (12 epochs): the authors'
# cmrcn_tiny_1x_4n_dp00_lr4 (their README: 52.2 box AP, 45.0 mask AP). The authors' protocol:
# configs/_base_/detection/cascade_mask_rcnn_dat_pp.py.
_base_ = [
    '../_base_/detection/cascade_mask_rcnn_dat_pp.py',
    '../_base_/datasets/coco_instance_detr_aug.py',
    '../_base_/schedules/coco_1x_dat_pp.py',
    '../_base_/backbones/dat_pp_t.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.0),
    neck=dict(in_channels=_base_.dat.channels))
