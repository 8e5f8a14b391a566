# RetinaNet with a DAT / DAT++ backbone (DAT's Table 3, the authors' DAT++ rtn_* configs), in
# mmdet's runtime. Stages 2-4 feed mmdet's RetinaNet FPN, which adds P6-P7 by strided convs on
# its last input (the authors' FPN takes all four stages with start_level=1: the same layers
# and weights). The backbone's arch and checkpoint and the FPN's input widths come from the
# row's architecture file (configs/_base_/backbones).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
    '../mmdat_runtime.py',
]
model = dict(
    backbone=dict(_delete_=True, type='DAT', out_indices=(1, 2, 3)),
    neck=dict(start_level=0, num_outs=5))
