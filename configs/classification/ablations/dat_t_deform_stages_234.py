# Table 7, row 2: deformable attention in stages 2-4.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(stage_types=('swin', 'deformable', 'deformable', 'deformable')))
