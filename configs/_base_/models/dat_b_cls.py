# ImageNet classifier with a DAT-B backbone (Table 1): LayerNorm -> global pool -> Linear.
custom_imports = dict(imports=['mmdat'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='DAT', arch='base', img_size=224, drop_path_rate=0.5),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
