# Table 7, row 4: deformable attention in stage 4 only.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(stage_types=('swin', 'swin', 'swin', 'deformable')))
