# DAT++ + RetinaNet as the authors trained it (rtn_*, dat_pp_reference_numerics.md 6.2): their
# optimizer at lr 2e-4 (per 64 images), activation checkpointing in the backbone. The rows add
# the data (DETR's augmentation), the schedule and the backbone.
_base_ = ['../models/retinanet_dat.py', '../schedules/coco_adamw_dat_pp.py']
model = dict(backbone=dict(with_cp=True))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
