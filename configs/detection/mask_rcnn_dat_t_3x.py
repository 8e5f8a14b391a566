# DAT-T + Mask R-CNN on COCO, 3x schedule (Table 4a: 47.1 box AP, 42.4 mask AP, 272 GFLOPs,
# 48 M params). The Swin detection protocol (mmdet's own Swin-T Mask R-CNN ms-crop-3x config,
# inherited): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 (none on norms and
# position tables), 1000 linear warm-up iterations, 36 epochs with the lr divided by 10 after
# epochs 27 and 33, batch 16 (8 GPUs x 2 images), multi-scale training with random crops
# (DETR's augmentation: shorter side 480-800, or resize 400-600 -> crop 384-600 -> resize
# 480-800).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmdat'], allow_failed_imports=False)
# a resumed run replays the random numbers (drop path, augmentation) of an uninterrupted one
custom_hooks = [dict(type='ResumableRandomnessHook')]

# ImageNet-1k DAT-T (configs/classification/dat_t_in1k.py, or the authors' checkpoint
# converted with tools/model_converters/dat_to_mmdat.py)
pretrained = 'checkpoints/dat_t_in1k_224.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='tiny',
        img_size=224,  # the pretraining size: sizes the position tables, any input works
        # r of the deformable blocks (stages 3-4; the entries of the shift-window stages 1-2
        # are unused): a 25x40 key grid in both stages at 1280x800, chosen to reproduce the
        # FLOPs of Tables 3-4 (README)
        key_downsample=(4, 2, 2, 1),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

# no weight decay on the deformable position tables and on the offset network's LayerNorm,
# `conv_offset.1` here (`conv_offset.1.norm` in the authors' code); Swin's config already
# exempts 'relative_position_bias_table' and 'norm'
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'rpe_table': dict(decay_mult=0.),
            'conv_offset.1': dict(decay_mult=0.),
        }))

# lr 1e-4 is for a total batch of 16; scaled linearly for other GPU counts / batch sizes
auto_scale_lr = dict(enable=True, base_batch_size=16)
