# Table 6, row 4: offsets, a fixed learnable (M, H0*W0, Hk0*Wk0) position bias.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(pos_encoding='fixed'))
