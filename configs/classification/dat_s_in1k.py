# DAT-S on ImageNet-1k, 300 epochs (Table 2: 83.7 top-1, 9.0 GFLOPs, 50 M params).
_base_ = [
    '../_base_/models/dat_s_cls.py',
    '../_base_/datasets/imagenet_bs128_dat_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_dat.py',
    'mmpretrain::_base_/default_runtime.py',
]
