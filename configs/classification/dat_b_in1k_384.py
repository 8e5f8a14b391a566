# DAT-B fine-tuned at 384x384 for 30 epochs from the 224 model (Table 2: 84.8 top-1,
# 49.8 GFLOPs). Window 12; the load hooks resize the window tables (13x13 -> 23x23) and the
# deformable position tables (stage 3: 27x27 -> 47x47) of the 224 checkpoint.
_base_ = './dat_b_in1k.py'

# the ImageNet-1k DAT-B 224 checkpoint (ours, or the authors' converted with
# tools/model_converters/dat_to_mmdat.py)
load_from = 'checkpoints/dat_b_in1k_224.pth'

model = dict(backbone=dict(img_size=384, window_size=12, drop_path_rate=0.5))

bgr_mean = [103.53, 116.28, 123.675]
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
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [  # 384 without cropping, as Swin at 384
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
# 16 GPUs x 64 = 1024 images per step (other totals: --auto-scale-lr)
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# 30 epochs, cosine, weight decay 1e-8 (paper). The paper gives no learning rate: Swin's
# 384 fine-tuning (whose code DAT's follows) uses 2e-5 per 512 images, 5 warm-up epochs from
# 1e-3 of it and a minimum of 1e-2 of it, i.e. 4e-5 per 1024 images.
optim_wrapper = dict(optimizer=dict(lr=4e-5, weight_decay=1e-8))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=4e-7, by_epoch=True, begin=5),
]
train_cfg = dict(max_epochs=30)
