# DAT-B + Semantic FPN on ADE20K, 40k iterations (Table 5: 47.02 mIoU, 481 GFLOPs, 92 M params).
_base_ = './semantic_fpn_dat_t_40k.py'

checkpoint_file = 'checkpoints/dat_b_in1k_224.pth'  # ImageNet-1k DAT-B

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
