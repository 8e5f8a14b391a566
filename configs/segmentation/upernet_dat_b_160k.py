# DAT-B + UperNet on ADE20K, 160k iterations (Table 5: 49.38 mIoU, 1212 GFLOPs, 121 M params).
_base_ = './upernet_dat_t_160k.py'

checkpoint_file = 'checkpoints/dat_b_in1k_224.pth'  # ImageNet-1k DAT-B

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, prefix='backbone.')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
