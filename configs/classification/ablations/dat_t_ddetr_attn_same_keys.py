# Table 8 (Appendix A), row "D-DETR attention, same keys as DAT": Deformable DETR's
# single-scale attention in stages 3-4 with as many points per query and head as DAT's keys
# (Hk0 * Wk0 at 224: 196 in stage 3, 49 in stage 4). The paper: 2.6x DAT-T's memory, 1.3x its
# FLOPs.
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(stage_types=('swin', 'swin', 'ddetr', 'ddetr'), ddetr_points='same'))
