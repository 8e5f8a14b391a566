# RetinaNet with a DAT-nano backbone on the demo's generated shapes: the data, schedule and
# runtime of configs/demo/dat_nano_shapes_det.py (its Mask R-CNN replaced), for the detection
# export tests (tests/test_deployment_detection.py). As configs/detection/retinanet_dat_t_1x.py
# (mmdet's RetinaNet, stages 2-4 into the FPN), narrowed for DAT-nano, with anchors half
# mmdet's size (the shapes are 15-38 px).
_base_ = '../demo/dat_nano_shapes_det.py'
model = dict(
    _delete_=True,
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='DAT', arch='nano', img_size=64, key_downsample=(4, 2, 1, 1),
                  out_indices=(1, 2, 3), drop_path_rate=0.1, init_cfg=None),
    neck=dict(type='FPN', in_channels=[64, 128, 256], out_channels=64, start_level=0,
              add_extra_convs='on_input', num_outs=5),
    bbox_head=dict(
        type='RetinaHead', num_classes=3, in_channels=64, stacked_convs=2, feat_channels=64,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=2,
                              scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                      ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator
