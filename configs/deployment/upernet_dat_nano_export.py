# A small UperNet (DAT-nano backbone, narrow heads) for the export tests and quick trials of
# tools/deployment/pytorch2onnx.py; the full-size model is
# configs/segmentation/upernet_dat_t_160k.py.
_base_ = '../segmentation/upernet_dat_t_160k.py'
model = dict(
    backbone=dict(arch='nano', img_size=64, drop_path_rate=0., init_cfg=None),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, num_classes=4),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=4))
