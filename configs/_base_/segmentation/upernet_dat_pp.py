# DAT++ + UperNet on ADE20K as the authors trained it (upn_*_160k_*, dat_pp_reference_numerics.md
# 6.3): DAT's Swin protocol (upernet_dat.py: AdamW lr 6e-5, weight decay 0.01, 1500 warm-up
# iterations, poly 1.0, 160k iterations at batch 16), mixed precision with a dynamic loss
# scale (the authors' Fp16OptimizerHook; fp32: optim_wrapper=dict(type='OptimWrapper')) and
# activation checkpointing in the backbone. The rows add the backbone and its stochastic depth.
_base_ = './upernet_dat.py'
model = dict(backbone=dict(with_cp=True))
# no decay as the authors' 'norm' key for the LayerNorms of mmdat's stem (`*.norm` there)
optim_wrapper = dict(
    type='AmpOptimWrapper',
    paramwise_cfg=dict(
        custom_keys={
            'patch_embed.projection.1': dict(decay_mult=0.),
            'patch_embed.projection.4': dict(decay_mult=0.),
        }))
