# DAT-S + UperNet on ADE20K, 160k iterations (Table 5: 48.31 mIoU, 1079 GFLOPs, 81 M params).
_base_ = './upernet_dat_t_160k.py'

checkpoint_file = 'checkpoints/dat_s_in1k_224.pth'  # ImageNet-1k DAT-S

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, prefix='backbone.')))
