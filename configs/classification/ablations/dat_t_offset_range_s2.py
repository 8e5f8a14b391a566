# Figure 4: offset range factor s = 2 (the paper's choice, = dat_t_in1k.py).
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(offset_range=2.0))
