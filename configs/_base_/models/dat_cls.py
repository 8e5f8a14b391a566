# ImageNet classifier with a DAT / DAT++ backbone: LayerNorm -> global average pool -> Linear
# (DAT's Table 1; the authors' DAT++ cls_norm/cls_head), trained with label smoothing 0.1 and
# Mixup 0.8 / CutMix 1.0 (one of the two per batch). The configs set the backbone's arch, its
# stochastic depth and the head's input width.
_base_ = '../mmdat_runtime.py'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='DAT', img_size=224),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
