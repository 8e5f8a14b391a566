# COCO boxes (mmdet's coco_detection.py) trained with DETR's augmentation after the random
# flip (detr_augmentation.py), for RetinaNet: DAT's 3x schedule, every DAT++ schedule.
_base_ = ['mmdet::_base_/datasets/coco_detection.py', './detr_augmentation.py']
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    _base_.detr_augmentation,
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
