# DAT-S++ + UperNet on ADE20K, 160k iterations: the authors' upn_small_160k_dp05_lr6 (their
# README: 50.5 mIoU, 51.2 multi-scale), with their protocol
# (configs/_base_/segmentation/upernet_dat_pp.py).
_base_ = ['../_base_/segmentation/upernet_dat_pp.py', '../_base_/backbones/dat_pp_s.py']
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.5),
    decode_head=dict(in_channels=_base_.dat.channels),
    auxiliary_head=dict(in_channels=_base_.dat.channels[2]))
