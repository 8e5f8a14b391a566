# DAT-B fine-tuned at 384x384 for 30 epochs from the 224 model (Table 2: 84.8 top-1,
# 49.8 GFLOPs). Window 12; the load hooks resize the window tables (7 -> 12) and the
# deformable position tables (stage 3: 27x27 -> 47x47) of the 224 checkpoint.
_base_ = [
    '../_base_/models/dat_b_cls.py',
    '../_base_/datasets/imagenet_bs128_dat_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_dat.py',
    'mmpretrain::_base_/default_runtime.py',
]
# the ImageNet-1k DAT-B 224 checkpoint (ours, or the authors' converted with
# tools/model_converters/dat_to_mmdat.py)
load_from = 'checkpoints/dat_b_in1k_224.pth'

model = dict(backbone=dict(img_size=384, window_size=12, drop_path_rate=0.5))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [  # 384 without cropping, as Swin at 384
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# 30 epochs, cosine, weight decay 1e-8 (paper); lr and warm-up as Swin's 384 fine-tuning
optim_wrapper = dict(optimizer=dict(lr=2e-5, weight_decay=1e-8))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=2e-7, by_epoch=True, begin=5),
]
train_cfg = dict(max_epochs=30)
