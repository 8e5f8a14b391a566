# DAT-T + Cascade Mask R-CNN on COCO, 1x schedule (Table 4b: 49.1 box AP, 42.5 mask AP,
# 750 GFLOPs, 86 M params). The Swin detection protocol: Swin's Cascade Mask R-CNN (box heads
# of 4 shared 3x3 convs with SyncBN + 1 fc, class-specific box regression trained with a GIoU
# loss on decoded boxes), AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 (none on norms
# and position tables), 1000 linear warm-up iterations, 12 epochs with the lr divided by 10
# after epochs 8 and 11, batch 16 (8 GPUs x 2 images), 1333x800 images.
_base_ = 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdat'], allow_failed_imports=False)
# a resumed run replays the random numbers (drop path, augmentation) of an uninterrupted one
custom_hooks = [dict(type='ResumableRandomnessHook')]

# ImageNet-1k DAT-T (configs/classification/dat_t_in1k.py, or the authors' checkpoint
# converted with tools/model_converters/dat_to_mmdat.py)
pretrained = 'checkpoints/dat_t_in1k_224.pth'

# SyncBN in the box heads, as Swin's; in a single (non-distributed) process, CPU included,
# torch's SyncBatchNorm computes plain batch statistics, so tools/train.py works unchanged
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='tiny',
        img_size=224,  # the pretraining size: sizes the position tables, any input works
        # r of the deformable blocks (stages 3-4; the entries of the shift-window stages 1-2
        # are unused): a 25x40 key grid in both stages at 1280x800, chosen to reproduce the
        # FLOPs of Tables 3-4 (README)
        key_downsample=(4, 2, 2, 1),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]),
    # Swin's 4conv1fc heads with GIoU loss, one per cascade stage (only the coder's stds differ)
    roi_head=dict(bbox_head=[
        dict(
            type='Shared4Conv1FCBBoxHead',
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=norm_cfg,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
    ]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

# no weight decay on norms and on the window / deformable position tables; the offset
# network's LayerNorm is `conv_offset.1` here (`conv_offset.1.norm` in the authors' code)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'rpe_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'conv_offset.1': dict(decay_mult=0.),
        }))

# lr 1e-4 is for a total batch of 16; scaled linearly for other GPU counts / batch sizes
auto_scale_lr = dict(enable=True, base_batch_size=16)
