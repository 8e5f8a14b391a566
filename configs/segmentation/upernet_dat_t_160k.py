# DAT-T + UperNet on ADE20K, 160k iterations (Table 5: 45.54 mIoU, 957 GFLOPs, 60 M params), with
# the Swin protocol (configs/_base_/segmentation/upernet_dat.py); stochastic depth 0.3 (Sec. 4.3).
_base_ = ['../_base_/segmentation/upernet_dat.py', '../_base_/backbones/dat_t.py']
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.3),
    decode_head=dict(in_channels=_base_.dat.channels),
    auxiliary_head=dict(in_channels=_base_.dat.channels[2]))
