# DAT-S + Cascade Mask R-CNN on COCO, 3x schedule (Table 4b: 52.7 box AP, 45.5 mask AP,
# 857 GFLOPs, 107 M params). Stochastic depth 0.2 as Swin-S in Swin's detection configs.
_base_ = './cascade_mask_rcnn_dat_t_3x.py'

pretrained = 'checkpoints/dat_s_in1k_224.pth'  # ImageNet-1k DAT-S

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
