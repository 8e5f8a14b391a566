# DAT++ + Semantic FPN on ADE20K as the authors trained it (fpn_*_80k_*,
# dat_pp_reference_numerics.md 6.3): DAT's PVT protocol (semantic_fpn_dat.py: AdamW lr 2e-4, weight decay 1e-4, poly 0.9, 40k
# iterations at batch 32, fp32) with no weight decay on the backbone's norms and deformable
# position tables. The rows add the backbone and its stochastic depth.
_base_ = './semantic_fpn_dat.py'
# the authors' custom_keys 'norm' and 'rpe_table' (names containing them); the LayerNorms of
# mmdat's offset networks (`conv_offset.1`) and stem (`patch_embed.projection.1/.4`) are named
# `*.norm` in the authors' code
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'rpe_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'conv_offset.1': dict(decay_mult=0.),
            'patch_embed.projection.1': dict(decay_mult=0.),
            'patch_embed.projection.4': dict(decay_mult=0.),
        }))
