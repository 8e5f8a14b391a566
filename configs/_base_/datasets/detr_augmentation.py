# DETR's multi-scale + random-crop training augmentation, as the Swin 3x configs (mmdet's
# swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py) and all the authors' DAT++ COCO configs
# use it: the shorter side resized to 480-800 (step 32, the longer <= 1333), or resized to
# 400/500/600, cropped to 384-600 and then resized to 480-800.
scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
          (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
detr_augmentation = dict(
    type='RandomChoice',
    transforms=[
        [dict(type='RandomChoiceResize', scales=scales, keep_ratio=True)],
        [
            dict(
                type='RandomChoiceResize',
                scales=[(400, 1333), (500, 1333), (600, 1333)],
                keep_ratio=True),
            dict(
                type='RandomCrop',
                crop_type='absolute_range',
                crop_size=(384, 600),
                allow_negative_crop=True),
            dict(type='RandomChoiceResize', scales=scales, keep_ratio=True),
        ],
    ])
del scales
