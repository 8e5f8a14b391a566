# Figure 4: offset range factor s = 0 (no deformation: offsets are s * tanh(.) = 0).
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(offset_range=0.0))
