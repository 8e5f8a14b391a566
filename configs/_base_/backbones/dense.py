# DAT / DAT++ as the backbone of a detector or segmentor (README: "Configs"):
# built at the ImageNet size, 224, which sizes the deformable position tables (any input
# size works) and loads the ImageNet weights of its classifier from `backbone.*`. The
# architecture files (dat_t.py, dat_pp_s.py, ...) add the arch and the checkpoint.
dat = dict(
    backbone=dict(img_size=224, init_cfg=dict(type='Pretrained', prefix='backbone.')))
