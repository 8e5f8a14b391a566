# `python tools/demo.py --task seg`: SemanticFPN with a DAT-nano backbone (a small DAT, not in
# the paper) segments circles, squares and triangles (+ background) in generated 160x128
# ADE20K-format images (mmdat.datasets.synthetic.make_segmentation), evaluated with mmseg's
# IoUMetric.
_base_ = '../segmentation/semantic_fpn_dat_t_40k.py'
data_root = 'work_dirs/demo/data/seg'
classes = ('background', 'circle', 'square', 'triangle')
crop = (128, 128)

model = dict(
    data_preprocessor=dict(size=crop),
    backbone=dict(arch='nano', img_size=64, key_downsample=(4, 2, 1, 1), drop_path_rate=0.1,
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, num_classes=len(classes),
                     norm_cfg=dict(type='BN', requires_grad=True)))

# ADE20K's layout and label encoding (0 ignored, reduce_zero_label), with our classes
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=dict(classes=classes),
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(160, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 12
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    # ends at train_cfg.max_epochs (the runner's default), so --epochs rescales it
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, eta_min=1e-5),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(by_epoch=True, interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(by_epoch=True)
randomness = dict(seed=0)
