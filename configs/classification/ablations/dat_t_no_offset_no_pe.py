# Table 6, row 1: no offsets (keys on the reference grid), no position encoding.
# The offset network is built but not run (the paper counts its parameters): DDP must
# tolerate the unused parameters.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(use_offsets=False, pos_encoding='none'))
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
