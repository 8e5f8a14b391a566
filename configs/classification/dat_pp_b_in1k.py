# DAT-B++ on ImageNet-1k, 300 epochs: the authors' configs/dat_base.yaml (their README: 84.9
# top-1; 93.69 M params here), 64 images per GPU.
_base_ = './dat_pp_t_in1k.py'
model = dict(backbone=dict(arch='base++', drop_path_rate=0.7), head=dict(in_channels=1024))
train_dataloader = dict(batch_size=64)
