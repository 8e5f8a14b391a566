# DAT++ + Mask R-CNN as the authors trained it (mrcn_*, dat_pp_reference_numerics.md 6.2): their
# FPN adds P6 by a strided conv on its last input (mmdet's Mask R-CNN: max-pooling), their
# optimizer at lr 4e-4 (per 64 images), activation checkpointing in the backbone. The rows add
# the data (DETR's augmentation), the schedule and the backbone.
_base_ = ['../models/mask_rcnn_dat.py', '../schedules/coco_adamw_dat_pp.py']
model = dict(backbone=dict(with_cp=True), neck=dict(add_extra_convs='on_input'))
