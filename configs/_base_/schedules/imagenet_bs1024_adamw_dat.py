# Swin's 300-epoch AdamW schedule, which DAT follows: lr 1e-3 per 1024 images (auto-scaled),
# weight decay 0.05 (none on norms, biases and position-bias tables), 20 warm-up epochs,
# cosine decay, gradient clipping.
_base_ = 'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py'

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.rpe_table': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0))
