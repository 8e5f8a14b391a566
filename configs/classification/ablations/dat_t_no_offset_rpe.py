# Table 6, row 2: no offsets, deformable relative position bias.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(use_offsets=False, pos_encoding='relative'))
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
