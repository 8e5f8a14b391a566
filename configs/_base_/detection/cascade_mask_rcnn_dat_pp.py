# DAT++ + Cascade Mask R-CNN as the authors trained it (cmrcn_*, dat_pp_reference_numerics.md
# 6.2): Swin's box heads as DAT's, their optimizer at lr 4e-4 (per 64 images), activation
# checkpointing in the backbone. The rows add the data (DETR's augmentation), the schedule and
# the backbone.
_base_ = ['../models/cascade_mask_rcnn_dat.py', '../schedules/coco_adamw_dat_pp.py']
model = dict(backbone=dict(with_cp=True))
