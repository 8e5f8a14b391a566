# DAT-S with overlapping convolutional patch embedding (7x7 stride 4) and downsampling
# (3x3 stride 2) layers (Appendix B, Table 9).
_base_ = './dat_s_in1k.py'
model = dict(backbone=dict(conv_stem=True))
