# Table 8 (Appendix A), row "D-DETR attention, 16 keys": the deformable attention of stages
# 3-4 replaced by Deformable DETR's single-scale attention with 16 sampling points per query
# and head (offsets and weights predicted from each query by linear layers).
_base_ = '../dat_t_in1k.py'
model = dict(backbone=dict(stage_types=('swin', 'swin', 'ddetr', 'ddetr'), ddetr_points=16))
