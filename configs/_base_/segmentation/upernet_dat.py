# DAT + UperNet on ADE20K with the Swin protocol (mmseg's own Swin-T UperNet config,
# inherited): AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01 (none on norms and position
# tables), 1500 linear warm-up iterations then poly decay (power 1.0), 160k iterations at batch
# 16 (8 GPUs x 2 images), 512x512 crops, FCN auxiliary head on stage 3, whole-image inference;
# multi-scale + flip test with `tools/test.py ... --tta` (mmseg's tta_model/tta_pipeline). The
# rows add the backbone (configs/_base_/backbones) and its stochastic depth.
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    '../mmdat_runtime.py',
]
# the Swin config's ImageNet checkpoint, unused: the backbone loads the one of its
# architecture file (`dat.backbone.init_cfg`)
checkpoint_file = None
model = dict(backbone=dict(_delete_=True, type='DAT', out_indices=(0, 1, 2, 3)))

# no weight decay on norms and on the window / deformable position tables; the offset
# network's LayerNorm is `conv_offset.1` here (`conv_offset.1.norm` in the authors' code)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'rpe_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'conv_offset.1': dict(decay_mult=0.),
        }))
