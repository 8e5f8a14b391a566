# The authors' DAT++ ImageNet schedule (dat_pp_reference_numerics.md 6.1) is DAT's, Swin's
# (imagenet_bs1024_adamw_dat.py: AdamW lr 5e-4 per 512 images = 1e-3 per 1024, weight decay
# 0.05 except on 1-D tensors, biases and the position tables, 300 epochs, 20 linear warm-up
# epochs from 1e-3 of the lr, gradient clipping 5), with mixed precision (their --amp), a
# per-iteration cosine, and their linear scaling rule applied to the lr and its floor (5e-6
# per 512 images) for any total batch (T, S: 8 GPUs x 128 images; B: 8 x 64).
_base_ = './imagenet_bs1024_adamw_dat.py'
optim_wrapper = dict(type='AmpOptimWrapper')
param_scheduler = [
    _base_.param_scheduler[0],
    dict(
        _base_.param_scheduler[1],
        eta_min=None,
        eta_min_ratio=1e-2,
        convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=True)
