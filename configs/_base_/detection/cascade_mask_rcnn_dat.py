# DAT + Cascade Mask R-CNN with the Swin detection protocol's optimizer (DAT's Table 4b); the
# rows add the data (1x: mmdet's, 3x: DETR's augmentation), the schedule and the backbone.
_base_ = ['../models/cascade_mask_rcnn_dat.py', '../schedules/coco_adamw_dat.py']
