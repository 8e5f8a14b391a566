# DAT-T + UperNet on ADE20K, 160k iterations (Table 5: 45.54 mIoU, 957 GFLOPs, 60 M params).
# The Swin protocol (mmseg's own Swin-T UperNet config, inherited): AdamW lr 6e-5, betas
# (0.9, 0.999), weight decay 0.01 (none on norms and position tables), 1500 linear warm-up
# iterations then poly decay (power 1.0), 160k iterations at batch 16 (8 GPUs x 2 images),
# 512x512 crops, FCN auxiliary head on stage 3, whole-image inference; multi-scale + flip
# test (Table 5's mIoU-dagger) with `tools/test.py ... --tta` (mmseg's tta_model/tta_pipeline).
# Stochastic depth 0.3 (T), 0.3 (S), 0.5 (B) (Sec. 4.3).
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdat'], allow_failed_imports=False)
# a resumed run replays the random numbers (drop path, augmentation) of an uninterrupted one
custom_hooks = [dict(type='ResumableRandomnessHook')]

# ImageNet-1k DAT-T (configs/classification/dat_t_in1k.py, or the authors' weights converted
# with tools/model_converters/dat_to_mmdat.py)
checkpoint_file = 'checkpoints/dat_t_in1k_224.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='tiny',
        img_size=224,
        # r of the deformable stages 3-4 (the entries of the shift-window stages 1-2 are
        # unused): r = 2 in stage 3 reproduces Table 5's FLOPs at 512x2048 (README)
        key_downsample=(4, 2, 2, 1),
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, prefix='backbone.')))

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
