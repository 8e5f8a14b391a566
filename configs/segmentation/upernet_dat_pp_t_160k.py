# DAT-T++ + UperNet on ADE20K, 160k iterations: the authors' upn_tiny_160k_dp03_lr6 (their README:
# 49.4 mIoU, 50.3 multi-scale), with their protocol
# (configs/_base_/segmentation/upernet_dat_pp.py).
_base_ = ['../_base_/segmentation/upernet_dat_pp.py', '../_base_/backbones/dat_pp_t.py']
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.3),
    decode_head=dict(in_channels=_base_.dat.channels),
    auxiliary_head=dict(in_channels=_base_.dat.channels[2]))
