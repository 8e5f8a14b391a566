# DAT-S + Semantic FPN on ADE20K, 40k iterations (Table 5: 46.08 mIoU, 320 GFLOPs, 53 M params).
_base_ = './semantic_fpn_dat_t_40k.py'

checkpoint_file = 'checkpoints/dat_s_in1k_224.pth'  # ImageNet-1k DAT-S

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, prefix='backbone.')))
