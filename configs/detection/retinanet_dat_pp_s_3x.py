# DAT-S++ + RetinaNet on COCO, 3x schedule (36 epochs): the authors' rtn_small_3x_4n_dp05_lr2
# (their README: 50.2 box AP). The authors' protocol:
# configs/_base_/detection/retinanet_dat_pp.py.
_base_ = [
    '../_base_/detection/retinanet_dat_pp.py',
    '../_base_/datasets/coco_detection_detr_aug.py',
    '../_base_/schedules/coco_3x_dat_pp.py',
    '../_base_/backbones/dat_pp_s.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.5),
    neck=dict(in_channels=_base_.dat.channels[1:]))
