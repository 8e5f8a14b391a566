# DAT-T++ on ImageNet-1k, 300 epochs: the authors' configs/dat_tiny.yaml (their README: 83.9
# top-1; 23.96 M params here with the 1000-class head).
_base_ = [
    '../_base_/models/dat_cls.py',
    '../_base_/datasets/imagenet_bs128_dat_pp_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_dat_pp.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(backbone=dict(arch='tiny++', drop_path_rate=0.2), head=dict(in_channels=512))
