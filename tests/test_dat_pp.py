"""DAT++ (arXiv 2309.01430) as mmdat's DAT backbone: the deformable attention's DAT++
conventions against a naive loop written from dat_pp_reference_numerics.md (section 3), the
blocks of section 1, parameter/FLOP counts against the released models, shapes, training
modes, degenerate sizes."""
import math

import pytest
import torch
import torch.nn.functional as F
from _numerics import assert_close_to_scale, assert_grads_close_to_scale
from test_dat import classifier, n_params
from test_deformable_attention import bilinear

from mmdat.models.backbones import DAT
from mmdat.models.layers import DeformableAttention


def naive_dat_pp_deformable(mod, x):
    """DAttentionBaseline of the authors' DAT++ (numerics page 3.2), one step at a time:
    raw offsets, key grid (p + 0.5) / (n - 1) * 2 - 1, pos = clamp(ref + off, -1, 1), query grid
    i / (H - 1) * 2 - 1 for the bias, logits (q.k) * d^-0.5 + bias."""
    B, C, H, W = x.shape
    M, G = mod.num_heads, mod.groups
    d, Cg = C // M, C // G
    dw, ln, pw = mod.conv_offset[0], mod.conv_offset[1], mod.conv_offset[3]
    q = F.conv2d(x, mod.proj_q.weight, mod.proj_q.bias)
    outs = []
    for b in range(B):
        pos = {}
        for g in range(G):
            o = F.conv2d(q[b:b + 1, g * Cg:(g + 1) * Cg], dw.weight, dw.bias, stride=dw.stride,
                         padding=dw.padding, groups=Cg)
            o = F.layer_norm(o.permute(0, 2, 3, 1), (Cg, ), ln.weight, ln.bias, ln.eps)
            o = F.conv2d(F.gelu(o.permute(0, 3, 1, 2)), pw.weight)[0]  # (2, Hk, Wk): y, x
            Hk, Wk = o.shape[1:]
            pos[g] = [(min(max(((i + 0.5) / (Hk - 1)) * 2 - 1 + float(o[0, i, j]), -1), 1),
                       min(max(((j + 0.5) / (Wk - 1)) * 2 - 1 + float(o[1, i, j]), -1), 1))
                      for i in range(Hk) for j in range(Wk)]
        xs = torch.cat([torch.stack([bilinear(x[b, g * Cg:(g + 1) * Cg], py, px)
                                     for py, px in pos[g]], 1) for g in range(G)])
        k = mod.proj_k.weight[:, :, 0, 0] @ xs + mod.proj_k.bias[:, None]
        v = mod.proj_v.weight[:, :, 0, 0] @ xs + mod.proj_v.bias[:, None]
        z = torch.zeros(C, H * W, dtype=x.dtype)
        for m in range(M):
            g = m // (M // G)
            for qi in range(H * W):
                i, j = divmod(qi, W)
                qy, qx = i / (H - 1) * 2 - 1, j / (W - 1) * 2 - 1
                logits = torch.stack([
                    (q[b, m * d:(m + 1) * d, i, j] * k[m * d:(m + 1) * d, n]).sum() * d**-0.5
                    + bilinear(mod.rpe_table[m:m + 1], 0.5 * (qy - py), 0.5 * (qx - px))[0]
                    for n, (py, px) in enumerate(pos[g])])
                z[m * d:(m + 1) * d, qi] = (v[m * d:(m + 1) * d] * logits.softmax(0)).sum(1)
        outs.append(mod.proj_out.weight[:, :, 0, 0] @ z + mod.proj_out.bias[:, None])
    return torch.stack(outs).reshape(B, C, H, W)


def dat_pp_attention(r=2, k=5, feat=(4, 4), seed=0):
    torch.manual_seed(seed)
    mod = DeformableAttention(16, num_heads=4, groups=2, feat_size=feat, key_downsample=r,
                              offset_range=-1, offset_kernel=k, reference_grid='shifted',
                              query_grid='corners')
    mod.init_weights()
    with torch.no_grad():  # offsets and biases large enough to matter, some points clamped
        mod.conv_offset[3].weight.normal_(0, 0.5)
        mod.rpe_table.normal_(0, 1.0)
    return mod.double()


@pytest.mark.parametrize('hw,r,k', [((5, 6), 2, 5), ((7, 9), 4, 7), ((6, 6), 1, 3),
                                    ((9, 5), 3, 3)])
@pytest.mark.parametrize('impl', ['reference', 'chunked'])
def test_dat_pp_deformable_equals_naive(hw, r, k, impl):
    mod = dat_pp_attention(r, k)
    mod.impl = impl
    x = torch.randn(2, 16, *hw, dtype=torch.float64)
    out = mod(x.flatten(2).transpose(1, 2), hw).transpose(1, 2).reshape(2, 16, *hw)
    torch.testing.assert_close(out, naive_dat_pp_deformable(mod, x), rtol=1e-9, atol=1e-9)


def test_dat_pp_points_clamped_and_grids():
    """The key grid's last point lies past 1 (1.167 for 7 points) and the clamp brings it to
    the border; the query grid spans [-1, 1] exactly."""
    from mmdat.models.layers.deformable_attention import grid_axis
    torch.testing.assert_close(grid_axis(7, 'shifted', dtype=torch.float64),
                               torch.tensor([-5, -3, -1, 1, 3, 5, 7], dtype=torch.float64) / 6)
    torch.testing.assert_close(grid_axis(5, 'corners'), torch.linspace(-1, 1, 5))
    mod = dat_pp_attention(r=2)
    with torch.no_grad():
        mod.conv_offset[3].weight.mul_(100)
    pts = mod.deformed_points(torch.randn(1, 16, 9, 9, dtype=torch.float64))
    assert pts.abs().max() <= 1 and (pts.abs() == 1).any()


def test_dat_pp_gradients_and_chunked_equal():
    mod = dat_pp_attention(r=2).float()
    x = torch.randn(2, 11 * 13, 16)
    results = []
    for impl in ('reference', 'chunked'):
        mod.impl = impl
        mod.zero_grad()
        xi = x.clone().requires_grad_()
        mod(xi, (11, 13)).pow(2).sum().backward()
        results.append((xi.grad, {n: p.grad.clone() for n, p in mod.named_parameters()}))
    (gx, grads), (ref_gx, ref_grads) = results[1], results[0]  # float32 sums in another order
    assert_close_to_scale(gx, ref_gx)
    assert_grads_close_to_scale(grads, ref_grads)
    assert mod.conv_offset[3].weight.grad.abs().sum() > 0  # offsets learn (where unclamped)


def test_dat_pp_option_errors():
    with pytest.raises(ValueError, match='negative offset_range'):
        DeformableAttention(16, 4, 2, (4, 4), offset_range=2.0, reference_grid='shifted')
    with pytest.raises(ValueError, match='query_grid'):
        DeformableAttention(16, 4, 2, (4, 4), query_grid='middle')


# --------------------------------------------------------------------------- the backbone
# Counted on the authors' released model definitions (numerics page 1.1), with the 1000-class
# head and the position tables.
@pytest.mark.parametrize('arch,params', [('tiny++', 23.96), ('small++', 53.13),
                                         ('base++', 93.69)])
def test_dat_pp_param_counts(arch, params):
    assert n_params(classifier(arch)) == pytest.approx(params, abs=0.01)


def test_dat_pp_structure():
    """Numerics page 1.1-1.6 for DAT-T++: stem, downsampling, block layout, key strides,
    offset kernels, ConvFFN, LPU, table shapes."""
    model = DAT('tiny++', out_indices=(0, 1, 2, 3))
    conv1, norm1, _, conv2, norm2 = model.patch_embed.projection
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride) == \
        (3, 32, (3, 3), (2, 2)) and conv1.bias is not None
    assert (conv2.out_channels, conv2.kernel_size, conv2.stride) == (64, (3, 3), (2, 2))
    for i, stage in enumerate(model.stages):
        kinds = ''.join('N' if type(b.attn).__name__ == 'NeighborhoodAttention' else 'D'
                        for b in stage.blocks)
        assert kinds == ['ND', 'NDND', 'ND' * 9, 'DD'][i]
        if i > 0:
            ds = stage.downsample.projection
            assert ds.kernel_size == (3, 3) and ds.stride == (2, 2) and ds.padding == (1, 1)
            assert ds.bias is None
        for block in stage.blocks:
            assert block.lpu.kernel_size == (3, 3) and block.lpu.groups == block.lpu.in_channels
            assert block.ffn.dwconv.groups == block.ffn.fc1.out_features == 4 * 64 * 2**i
            attn = block.attn
            if isinstance(attn, DeformableAttention):
                dw = attn.conv_offset[0]
                assert (attn.key_downsample, dw.kernel_size[0], dw.padding[0]) == \
                    ((8, 4, 2, 1)[i], (9, 7, 5, 3)[i], (4, 3, 2, 1)[i])
                assert attn.rpe_table.shape == (2 * 2**i, *(2 * (56 >> i) - 1, ) * 2)
                assert attn.groups == (1, 2, 4, 8)[i]
            else:
                assert attn.rpb.shape == (2 * 2**i, 13, 13)


@pytest.mark.parametrize('batch', [1, 2])
def test_token_convs_run_channels_last(batch):
    """The convs over tokens (LPU, ConvFFN, offset network, downsampling) get a channels-last
    view with a proper batch stride also for one image, so oneDNN runs them channels-last
    (its output is) instead of copying the map to NCHW; same values as on an NCHW copy."""
    from mmdat.models.backbones.dat import dwconv_tokens
    from mmdat.models.layers.deformable_attention import token_map
    tokens = torch.randn(batch, 6 * 10, 16)
    m = token_map(tokens, (6, 10))
    assert m.data_ptr() == tokens.data_ptr() and m.stride() == (60 * 16, 1, 10 * 16, 16)
    assert torch.equal(m, tokens.transpose(1, 2).reshape(batch, 16, 6, 10))
    conv = torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16)
    assert conv(m).stride(1) == 1
    torch.testing.assert_close(dwconv_tokens(conv, tokens, (6, 10)),
                               conv(m.contiguous()).flatten(2).transpose(1, 2))


@pytest.mark.parametrize('size', [(225, 301), (513, 769)])
@pytest.mark.parametrize('train', [True, False])
def test_dat_pp_strides_at_odd_sizes(size, train):
    model = DAT('tiny++', out_indices=(0, 1, 2, 3)).train(train)
    with torch.set_grad_enabled(train):
        outs = model(torch.randn(1, 3, *size))
    for i, (out, dim) in enumerate(zip(outs, [64, 128, 256, 512])):
        stride = 4 * 2**i
        assert out.shape == (1, dim, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert torch.isfinite(out).all()
    if train:
        sum(o.mean() for o in outs).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                   if p.grad is not None)


@pytest.mark.parametrize('size', [(32, 32), (33, 40), (64, 100), (96, 96)])
def test_dat_pp_degenerate_sizes(size):
    """Numerics page 3.3: a 1-cell key axis ((0.5) / 0 = +inf, clamped: the key sits on the last
    row/column, as in the authors' code) and a 1-pixel stage-4 map (the query at 0 instead of
    the authors' 0 / 0) give finite outputs and gradients; maps smaller than the 7x7
    neighbourhood are padded."""
    model = DAT('nano++', out_indices=(0, 1, 2, 3), drop_path_rate=0.)
    x = torch.randn(2, 3, *size, requires_grad=True)
    outs = model(x)
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.sum() for o in outs).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dat_pp_with_cp_same_gradients():
    torch.manual_seed(0)
    a = DAT('nano++', drop_path_rate=0.)
    b = DAT('nano++', drop_path_rate=0., with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 80)
    grads = []
    for model in (a, b):
        model.train()
        model(x)[0].pow(2).mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6)


def test_dat_pp_frozen_stages_and_norm_eval():
    model = DAT('nano++', frozen_stages=1, out_indices=(0, 1, 2, 3), norm_eval=True).train()
    for p in model.patch_embed.parameters():
        assert not p.requires_grad
    for i, stage in enumerate(model.stages):
        assert all(p.requires_grad == (i > 1) for p in stage.parameters())
        assert stage.training == (i > 1) or i > 1
    assert not model.norm0.weight.requires_grad and model.norm2.weight.requires_grad


def test_dat_pp_bf16_autocast_finite():
    model = DAT('nano++', out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(1, 3, 96, 128))
    assert all(torch.isfinite(o.float()).all() for o in outs)


def test_dat_pp_init():
    """Numerics page 4: position tables ~N(0, 0.01^2), neighbourhood biases ~N(0, 0.02^2),
    layers at PyTorch's defaults."""
    torch.manual_seed(0)
    model = DAT('tiny++')
    model.init_weights()
    rpe = torch.cat([b.attn.rpe_table.flatten() for s in model.stages for b in s.blocks
                     if isinstance(b.attn, DeformableAttention)])
    rpb = torch.cat([b.attn.rpb.flatten() for s in model.stages for b in s.blocks
                     if not isinstance(b.attn, DeformableAttention)])
    assert rpe.std().item() == pytest.approx(0.01, rel=0.05)
    assert rpb.std().item() == pytest.approx(0.02, rel=0.05)


def test_dat_pp_custom_arch_family_overrides():
    """DAT++'s topology without ConvFFN, LPU and conv stem (the authors' dat_p.yaml)."""
    arch = dict(DAT.arch_zoo['tiny++'], ffn='mlp', lpu=False)
    model = DAT(arch, conv_stem=False)
    assert model.stages[0].blocks[0].lpu is None
    assert n_params(model) + (512 * 1000 + 1000) / 1e6 == pytest.approx(22.77, abs=0.01)
    with pytest.raises(ValueError, match='unknown keys'):
        DAT(dict(DAT.arch_zoo['tiny++'], convffn=True))
    with pytest.raises(ValueError, match='family'):
        DAT(dict(DAT.arch_zoo['tiny'], family='dat2'))
    with pytest.raises(ValueError, match='layout'):
        DAT('tiny++', stage_types=('ND', 'NQ', 'ND', 'DD'))
    with pytest.raises(ValueError, match='offset_range'):
        DAT('tiny++', offset_range=2.0)


# FLOPs of the classifier (the figures quoted for the paper: 4.3 / 9.4 / 16.6 G at 224, 49.7 G
# for DAT-B++ at 384, which the authors build at img_size 224), neighbourhood attention's
# q.k and attn.v over 49 keys included.
@pytest.mark.parametrize('arch,size,gflops', [
    ('tiny++', 224, 4.3),
    pytest.param('small++', 224, 9.4, marks=pytest.mark.slow),
    pytest.param('base++', 224, 16.6, marks=pytest.mark.slow),
    pytest.param('base++', 384, 49.7, marks=pytest.mark.slow)])
def test_dat_pp_flops(arch, size, gflops):
    from mmengine.analysis import get_model_complexity_info
    model = classifier(arch).eval()
    info = get_model_complexity_info(model, input_shape=(3, size, size), show_table=False,
                                     show_arch=False)
    assert info['flops'] / 1e9 == pytest.approx(gflops, rel=0.02), info['flops_str']


def test_attention_paths_from_the_config():
    """``attn_impl`` / ``attn_chunk_size`` reach every attention; all paths give the same."""
    x = torch.randn(1, 3, 96, 128)
    outs = {}
    for impl in ('auto', 'reference', dict(deformable='chunked', neighborhood='tiled')):
        torch.manual_seed(0)
        model = DAT('nano++', attn_impl=impl, attn_chunk_size=dict(deformable=1000))
        kinds = {type(b.attn).__name__: b.attn for s in model.stages for b in s.blocks}
        if isinstance(impl, str):
            assert kinds['NeighborhoodAttention'].impl == impl
        assert kinds['DeformableAttention'].chunk_size == 1000
        outs[str(impl)] = model(x)
    for out in outs.values():
        for a, b in zip(out, outs['auto']):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='attn_impl'):
        DAT('nano++', attn_impl='chunked')
    with pytest.raises(ValueError, match='neighborhood attention takes one of'):
        DAT('nano++', attn_impl=dict(neighborhood='chunked'))
    with pytest.raises(ValueError, match='attn_chunk_size'):
        DAT('nano++', attn_chunk_size=0)
