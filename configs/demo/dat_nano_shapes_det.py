# `python tools/demo.py --task det`: Mask R-CNN with a DAT-nano backbone (a small DAT, not in
# the paper) detects and segments circles, squares and triangles in generated 160x128 COCO-format
# images (mmdat.datasets.synthetic.make_detection), evaluated with mmdet's CocoMetric.
_base_ = '../detection/mask_rcnn_dat_t_1x.py'
data_root = 'work_dirs/demo/data/det'
classes = ('circle', 'square', 'triangle')
scale = (160, 128)

model = dict(
    backbone=dict(arch='nano', img_size=64, key_downsample=(4, 2, 1, 1), drop_path_rate=0.1,
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=len(classes))),
    train_cfg=dict(rpn_proposal=dict(max_per_img=200), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100)))

metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [  # one warm-up epoch, then cosine
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    # ends at train_cfg.max_epochs (the runner's default), so --epochs rescales it
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, eta_min=1e-5),
]
optim_wrapper = dict(optimizer=dict(lr=5e-4))
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
