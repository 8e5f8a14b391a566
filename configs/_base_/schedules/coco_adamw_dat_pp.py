# The optimizer of the authors' DAT++ COCO configs (DAT-Detection, dat_pp_reference_numerics.md
# 6.2): AdamW, betas (0.9, 0.999), weight decay 0.05, none on norms (norm_decay_mult=0 and any
# parameter named *norm*) and on the deformable position tables; biases, the neighbourhood
# attention's bias tables (rpb) and the depthwise convs are decayed. lr 4e-4 (Mask / Cascade
# R-CNN; RetinaNet 2e-4) for a total batch of 64 (4 nodes x 8 GPUs x 2 images: "4 times the
# default"), scaled linearly for other batches. Mixed precision with a dynamic loss scale, as
# the authors' Fp16OptimizerHook (fp32: optim_wrapper=dict(type='OptimWrapper')).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={
            'rpe_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
auto_scale_lr = dict(enable=True, base_batch_size=64)
