# DAT-B on ImageNet-1k, 300 epochs (Table 2: 84.0 top-1, 15.8 GFLOPs, 88 M params).
_base_ = [
    '../_base_/models/dat_b_cls.py',
    '../_base_/datasets/imagenet_bs128_dat_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_dat.py',
    'mmpretrain::_base_/default_runtime.py',
]
