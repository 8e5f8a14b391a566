# Figure 4: offset range factor s = 10.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(offset_range=10.0))
