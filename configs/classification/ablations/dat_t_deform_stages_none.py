# Table 7, row 5: no deformable attention (shift-window everywhere: Swin-T).
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(stage_types=('swin', 'swin', 'swin', 'swin')))
