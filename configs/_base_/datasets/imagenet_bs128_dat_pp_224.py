# ImageNet-1k as the authors' DAT++ code reads it (timm's transforms with their config.py
# defaults, dat_pp_reference_numerics.md 6.1), which mmpretrain's DeiT/Swin pipeline is:
# bicubic RandomResizedCrop 224, flip, RandAugment (rand-m9-mstd0.5-inc1), random erasing 0.25
# (per-pixel noise); 128 images per GPU. Test: a square bicubic resize to 256x256 (not of the
# shorter side), then the central 224x224 crop.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
