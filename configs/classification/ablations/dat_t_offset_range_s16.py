# Figure 4: offset range factor s = 16.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(offset_range=16.0))
