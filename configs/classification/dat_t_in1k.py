# DAT-T on ImageNet-1k, 300 epochs (Table 2: 82.0 top-1, 4.6 GFLOPs, 29 M params).
_base_ = [
    '../_base_/models/dat_t_cls.py',
    '../_base_/datasets/imagenet_bs128_dat_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_dat.py',
    'mmpretrain::_base_/default_runtime.py',
]
