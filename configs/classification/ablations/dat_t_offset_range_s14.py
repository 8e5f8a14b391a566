# Figure 4: offset range factor s = 14.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(offset_range=14.0))
