# Figure 4: offset range factor s = 8.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(offset_range=8.0))
