# DAT-B++ + Cascade Mask R-CNN on COCO, 3x schedule (36 epochs): the authors'
# cmrcn_base_3x_8n_dp08_lr4 (their README: 54.5 box AP, 47.0 mask AP). The authors' protocol:
# configs/_base_/detection/cascade_mask_rcnn_dat_pp.py.
_base_ = [
    '../_base_/detection/cascade_mask_rcnn_dat_pp.py',
    '../_base_/datasets/coco_instance_detr_aug.py',
    '../_base_/schedules/coco_3x_dat_pp.py',
    '../_base_/backbones/dat_pp_b.py',
]
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.8),
    neck=dict(in_channels=_base_.dat.channels))
optim_wrapper = dict(type='OptimWrapper')  # trained in fp32 (OptimizerHook)
train_dataloader = dict(batch_size=1)  # 8 nodes x 8 GPUs x 1 image = 64
