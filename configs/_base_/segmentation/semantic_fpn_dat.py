# DAT + Semantic FPN on ADE20K with the PVT protocol that the DAT paper follows (Sec. 4.3;
# PVT's released SemanticFPN configs): AdamW, lr 2e-4 (PVT's 1e-4 at batch 16, doubled for its
# 8-GPU batch 32), weight decay 1e-4, poly decay (power 0.9) to 0, 40k iterations at batch 32
# (8 GPUs x 4 images), 512x512 crops; whole-image inference on images resized to a 512 short
# side (mmseg's ADE20K pipelines); multi-scale + flip test with `tools/test.py ... --tta`. The
# rows add the backbone (configs/_base_/backbones) and its stochastic depth.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
    '../mmdat_runtime.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(_delete_=True, type='DAT', out_indices=(0, 1, 2, 3)),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)
]

# 8 GPUs x 4 images = batch 32
train_dataloader = dict(batch_size=4)
