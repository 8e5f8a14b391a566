# ImageNet classifier with a DAT-S backbone (Table 1).
_base_ = './dat_cls.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.3), head=dict(in_channels=768))
