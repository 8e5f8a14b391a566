# Cascade Mask R-CNN with a DAT / DAT++ backbone (DAT's Table 4b, the authors' DAT++ cmrcn_*
# configs), in mmdet's runtime, with Swin's box heads: per cascade stage 4 shared 3x3 convs
# with SyncBN + 1 fc, class-specific box regression trained with a GIoU loss on decoded boxes
# (only the coder's stds differ between the stages). The backbone's arch and checkpoint and
# the FPN's input widths come from the row's architecture file (configs/_base_/backbones).
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
    '../mmdat_runtime.py',
]
# in a single (non-distributed) process, CPU included, torch's SyncBatchNorm computes plain
# batch statistics, so tools/train.py works unchanged
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(_delete_=True, type='DAT', out_indices=(0, 1, 2, 3)),
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
