# Table 7, row 1: (local, deformable) block pairs in all four stages.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(stage_types=('deformable', 'deformable', 'deformable', 'deformable')))
