# Table 6, row 3: offsets, no position encoding.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(pos_encoding='none'))
