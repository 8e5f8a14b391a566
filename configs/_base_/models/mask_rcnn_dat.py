# Mask R-CNN with a DAT / DAT++ backbone (DAT's Table 4a, the authors' DAT++ mrcn_* configs),
# in mmdet's runtime: the four stages feed mmdet's FPN, standard RPN, box and mask heads. The
# backbone's arch and checkpoint and the FPN's input widths come from the row's architecture
# file (configs/_base_/backbones).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
    '../mmdat_runtime.py',
]
model = dict(backbone=dict(_delete_=True, type='DAT', out_indices=(0, 1, 2, 3)))
