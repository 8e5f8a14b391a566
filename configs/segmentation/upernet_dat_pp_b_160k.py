# DAT-B++ + UperNet on ADE20K, 160k iterations: the authors' upn_base_160k_dp07_lr6 (their README:
# 51.0 mIoU, 51.5 multi-scale), with their protocol
# (configs/_base_/segmentation/upernet_dat_pp.py).
_base_ = ['../_base_/segmentation/upernet_dat_pp.py', '../_base_/backbones/dat_pp_b.py']
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.7),
    decode_head=dict(in_channels=_base_.dat.channels),
    auxiliary_head=dict(in_channels=_base_.dat.channels[2]))
optim_wrapper = dict(type='OptimWrapper')  # trained in fp32 (OptimizerHook)
