# The optimizer of the Swin detection protocol that DAT's COCO configs follow (mmdet's own Swin
# configs): AdamW lr 1e-4 for a total batch of 16 (8 GPUs x 2 images; scaled linearly for
# other batches), betas (0.9, 0.999), weight decay 0.05, none on norms and on the window /
# deformable position tables. The offset network's LayerNorm is `conv_offset.1` here
# (`conv_offset.1.norm` in the authors' code).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'rpe_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'conv_offset.1': dict(decay_mult=0.),
        }))
auto_scale_lr = dict(enable=True, base_batch_size=16)
