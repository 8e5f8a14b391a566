# Table 6, row 5: offsets, depthwise-conv position encoding (CSwin's LePE).
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(pos_encoding='dwconv'))
