# DAT-B++ fine-tuned on 384x384 images for 30 epochs from the 224 model: the authors'
# configs/dat_base_384.yaml (their README: 85.9 top-1). As theirs, the model is built at 224
# (img_size: the position tables keep the 224 shapes that the released weights have; any input
# size works) and fed 384x384 crops; the test resizes to 384x384 without cropping.
_base_ = './dat_pp_b_in1k.py'

# the ImageNet-1k DAT-B++ 224 checkpoint (ours, or the authors' converted with
# tools/model_converters/dat_to_mmdat.py)
load_from = 'checkpoints/dat_pp_b_in1k_224.pth'

model = dict(backbone=dict(drop_path_rate=0.6))

train_pipeline = [
    dict(t, scale=384) if t.type == 'RandomResizedCrop' else t for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, scale=(384, 384)) if t.type == 'Resize' else t for t in _base_.test_pipeline
    if t.type != 'CenterCrop'
]
train_dataloader = dict(batch_size=24, dataset=dict(pipeline=train_pipeline))  # 8 x 24
val_dataloader = dict(batch_size=24, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# lr 2e-5 per 512 images (and its floor, 2e-7), weight decay 1e-8, no warm-up, cosine
optim_wrapper = dict(optimizer=dict(lr=2e-5 * 1024 / 512, weight_decay=1e-8))
param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        eta_min_ratio=1e-2,
        by_epoch=True,
        begin=0,
        end=30,
        convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=30)
