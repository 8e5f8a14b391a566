# Table 6, row "P": PVT's spatial-reduction attention (SRA) in every block of stages 1-2
# (reduction ratios 8 and 4, PVT's), DAT-T's (local, deformable) pairs in stages 3-4.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(stage_types=('pvt', 'pvt', 'deformable', 'deformable'),
                           sr_ratios=(8, 4, 2, 1)))
