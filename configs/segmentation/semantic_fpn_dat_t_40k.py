# DAT-T + Semantic FPN on ADE20K, 40k iterations (Table 5: 42.56 mIoU, 198 GFLOPs, 32 M params),
# with the PVT protocol (configs/_base_/segmentation/semantic_fpn_dat.py); stochastic depth 0.3
# (Sec. 4.3).
_base_ = ['../_base_/segmentation/semantic_fpn_dat.py', '../_base_/backbones/dat_t.py']
model = dict(
    backbone=dict(_base_.dat.backbone, drop_path_rate=0.3),
    neck=dict(in_channels=_base_.dat.channels))
