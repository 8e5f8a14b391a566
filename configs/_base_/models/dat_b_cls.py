# ImageNet classifier with a DAT-B backbone (Table 1).
_base_ = './dat_cls.py'
model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1024))
