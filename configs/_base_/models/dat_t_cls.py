# ImageNet classifier with a DAT-T backbone (Table 1).
_base_ = './dat_cls.py'
model = dict(backbone=dict(arch='tiny', drop_path_rate=0.2), head=dict(in_channels=768))
