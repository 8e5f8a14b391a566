# DAT-B + Cascade Mask R-CNN on COCO, 3x schedule (Table 4b: 53.0 box AP, 45.8 mask AP,
# 1003 GFLOPs, 145 M params). Stochastic depth 0.3 as Swin-B in Swin's detection configs.
_base_ = './cascade_mask_rcnn_dat_t_3x.py'

pretrained = 'checkpoints/dat_b_in1k_224.pth'  # ImageNet-1k DAT-B

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
