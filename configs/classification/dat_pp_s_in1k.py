# DAT-S++ on ImageNet-1k, 300 epochs: the authors' configs/dat_small.yaml (their README: 84.6
# top-1; 53.13 M params here).
_base_ = './dat_pp_t_in1k.py'
model = dict(backbone=dict(arch='small++', drop_path_rate=0.4), head=dict(in_channels=768))
