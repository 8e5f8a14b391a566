# DAT-S + RetinaNet on COCO, 3x schedule (Table 3: 47.9 box AP, 359 GFLOPs, 60 M params).
# Stochastic depth 0.2 as Swin-S in Swin's and mmdet's detection configs.
_base_ = './retinanet_dat_t_3x.py'

pretrained = 'checkpoints/dat_s_in1k_224.pth'  # ImageNet-1k DAT-S

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
