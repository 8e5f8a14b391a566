"""Reliability (issue 10): a crash costs only the time since the last checkpoint, mistakes in
configs, inputs and checkpoints are reported plainly, mixed precision stays finite, and
seeded CPU training is deterministic.

Extends ``test_runner_resume.py`` (in-process resume), ``test_converter.py`` (the conversion)
and ``test_dat.py`` (resize hooks, a few bad inputs). Everything runs on CPU with ``'nano'``
DATs and tiny generated data; only the fp16 ``AmpOptimWrapper`` case needs CUDA.
"""
import glob
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint, save_checkpoint
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from test_converter import _converter, authors_dat_t_state_dict

from mmdat.datasets import make_classification
from mmdat.models.backbones import DAT
from mmdat.models.layers import DeformableAttention, NeighborhoodAttention

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NANO = DAT.arch_zoo['nano']


def nano_classifier(**backbone):
    backbone = dict(dict(type='DAT', arch='nano', img_size=64, drop_path_rate=0.), **backbone)
    return MODELS.build(dict(
        _scope_='mmpretrain', type='ImageClassifier', backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=NANO['embed_dims'][-1])))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_classification(str(tmp_path_factory.mktemp('shapes')), num_train=12,
                               num_val=0, size=64, seed=3)


@pytest.fixture
def restore_determinism():
    """Runner(randomness=dict(deterministic=True)) switches torch's global flags on."""
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic,
              cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0])
    cudnn.deterministic, cudnn.benchmark = before[1:]


def train_cfg_dict(data_root, work_dir, seed=0, drop_path_rate=0., augment=False):
    """A 3-epoch, 3-iteration-per-epoch DAT-nano classification run, checkpoint each epoch."""
    pipeline = [dict(type='LoadImageFromFile')]
    if augment:
        pipeline.append(dict(type='RandomFlip', prob=0.5, direction='horizontal'))
    pipeline.append(dict(type='PackInputs'))
    return dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmdat'], allow_failed_imports=False),
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3,
                                   mean=[127.5] * 3, std=[64.] * 3, to_rgb=True),
            backbone=dict(type='DAT', arch='nano', img_size=64,
                          drop_path_rate=drop_path_rate),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=3,
                      in_channels=NANO['embed_dims'][-1])),
        work_dir=work_dir,
        train_dataloader=dict(
            batch_size=4, num_workers=0, persistent_workers=False,
            collate_fn=dict(type='default_collate'),
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                         pipeline=pipeline)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        # DAT's schedule in small: AdamW, per-iteration warm-up across the epoch boundary,
        # then cosine decay, gradient clipping (all of it state that must survive a crash)
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                           clip_grad=dict(max_norm=5.0)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
            dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=3, T_max=3,
                 eta_min=1e-5)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=seed, deterministic=True),
        log_level='WARNING')


# ------------------------------------------------------------------------ 1. kill and resume
KILL_HOOK = '''
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SigkillAfterCheckpoint(Hook):
    """SIGKILL this process right after the checkpoint of epoch ``epoch`` is written."""

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW)

    def __init__(self, epoch):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def train_tool(cfg_file, work_dir, *extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [osp.dirname(cfg_file), ROOT, os.environ.get('PYTHONPATH', '')]), OMP_NUM_THREADS='2')
    return subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg_file, '--work-dir', work_dir,
         *extra], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('resumable', [True, False], ids=['with_hook', 'without_hook'])
def test_sigkill_then_resume_gives_the_uninterrupted_weights(data_root, tmp_path, resumable):
    """tools/train.py killed with SIGKILL after epoch 2's checkpoint, resumed with --resume,
    ends with exactly the weights and optimizer state of an uninterrupted run.

    The run draws random numbers all along (drop path 0.3 and a random flip in the main
    process). MMEngine's checkpoints do not hold the generators' states; mmdat's
    ``ResumableRandomnessHook`` (in every mmdat config) makes the random numbers a function of
    the position in training, so the resumed run replays them. Without the hook the resumed
    run's weights differ: the test is sensitive to what it checks.
    """
    (tmp_path / 'sigkill_hook.py').write_text(KILL_HOOK)
    cfg = Config(train_cfg_dict(data_root, work_dir='', drop_path_rate=0.3, augment=True))
    cfg.custom_imports['imports'].append('sigkill_hook')
    hooks = [dict(type='ResumableRandomnessHook')] if resumable else []
    cfg.custom_hooks = hooks + [dict(type='SigkillAfterCheckpoint', epoch=2, priority='LOWEST')]
    crashing = str(tmp_path / 'crashing.py')
    cfg.dump(crashing)
    cfg.custom_hooks = hooks
    plain = str(tmp_path / 'plain.py')
    cfg.dump(plain)

    ref_dir, crash_dir = str(tmp_path / 'uninterrupted'), str(tmp_path / 'crashed')
    ref = train_tool(plain, ref_dir)
    assert ref.returncode == 0, ref.stderr[-3000:]

    killed = train_tool(crashing, crash_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert osp.exists(osp.join(crash_dir, 'epoch_2.pth'))
    assert not osp.exists(osp.join(crash_dir, 'epoch_3.pth'))

    written = os.stat(osp.join(crash_dir, 'epoch_2.pth')).st_mtime_ns
    resumed = train_tool(crashing, crash_dir, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # it continued from epoch 2 (not from scratch, which would rewrite epoch_2.pth)
    assert os.stat(osp.join(crash_dir, 'epoch_2.pth')).st_mtime_ns == written

    a = torch.load(osp.join(ref_dir, 'epoch_3.pth'), map_location='cpu', weights_only=True)
    b = torch.load(osp.join(crash_dir, 'epoch_3.pth'), map_location='cpu', weights_only=True)
    assert a['meta']['iter'] == b['meta']['iter'] == 9
    assert a['state_dict'].keys() == b['state_dict'].keys()
    same = [torch.equal(value, b['state_dict'][key]) for key, value in a['state_dict'].items()]
    if not resumable:
        assert not all(same), 'drop path and flips did not change the resumed run'
        return
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    for pid, state in a['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(value, b['optimizer']['state'][pid][name]), (pid, name)
    assert a['param_schedulers'] == b['param_schedulers']


# ------------------------------------------------------------------------ 2. checkpoints
@pytest.fixture(scope='module')
def authors_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('authors') / 'dat_tiny_in1k_224.pth')
    torch.save({'model': authors_dat_t_state_dict(), 'epoch': 300}, path)
    return path


@pytest.fixture(scope='module')
def converted_ckpt(authors_ckpt, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('converted') / 'dat_t_mmdat.pth')
    assert _converter().main([authors_ckpt, path]) == 0
    return path


def pretrained(checkpoint, prefix=None, **backbone):
    init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
    if prefix:
        init_cfg['prefix'] = prefix
    model = DAT(init_cfg=init_cfg, **backbone)
    model.init_weights()
    return model


def test_authors_checkpoint_is_refused_with_the_converter_named(authors_ckpt):
    """Unconverted, none of its keys would load and mmengine would only warn: a backbone
    would silently train from scratch."""
    with pytest.raises(RuntimeError, match=r"(?s)authors' DAT code \(nested under the entry "
                                           r"'model'\).*patch_proj.*dat_to_mmdat\.py"):
        pretrained(authors_ckpt, arch='tiny')
    flat = authors_dat_t_state_dict()
    with pytest.raises(RuntimeError, match=r"authors' DAT code, keys such as \['patch_proj"):
        DAT('tiny').load_state_dict(flat, strict=False)


def test_converted_checkpoint_loads_as_backbone_at_another_resolution(converted_ckpt):
    """The converted DAT-T (224, window 7) as the 384/window-12 backbone, with the dense
    tasks' extra output norms: every tensor is loaded, the tables resized."""
    src = torch.load(converted_ckpt, weights_only=True)['state_dict']
    model = pretrained(converted_ckpt, 'backbone.', arch='tiny', img_size=384, window_size=12,
                       out_indices=(0, 1, 2, 3))
    for key, value in model.state_dict().items():
        if key.startswith(('norm0', 'norm1', 'norm2')) or key.endswith('position_index'):
            continue  # new in the dense model / derived from the window size
        old = src[f'backbone.{key}']
        if key.endswith(('relative_position_bias_table', 'rpe_table')):
            assert value.shape != old.shape and torch.isfinite(value).all(), key
        else:
            assert torch.equal(value, old), key
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == [96, 192, 384, 768]


def test_detector_checkpoint_as_backbone_weights(tmp_path):
    """A RetinaNet checkpoint (mmdet, DAT-nano backbone) loads into a bare DAT with
    prefix='backbone.'; without the prefix the error names the prefix to use."""
    from mmdat.utils.complexity import build_model
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'detection', 'retinanet_dat_t_1x.py'))
    cfg.model.backbone.update(arch='nano', init_cfg=None)
    cfg.model.neck.in_channels = NANO['embed_dims'][1:]
    detector = build_model(cfg)
    detector.init_weights()
    ckpt = str(tmp_path / 'retinanet.pth')
    save_checkpoint({'state_dict': detector.state_dict(), 'meta': dict(epoch=12)}, ckpt)

    backbone = pretrained(ckpt, 'backbone.', arch='nano', out_indices=(1, 2, 3))
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, detector.backbone.state_dict()[key]), key
    with pytest.raises(RuntimeError, match=r"prefix 'backbone\.'"):
        pretrained(ckpt, arch='nano', out_indices=(1, 2, 3))


def test_smaller_resolution_and_window(tmp_path):
    """The other direction of test_dat's 224 -> 384 case: a 384/window-12 checkpoint into a
    224/window-7 model (tables shrink), by the Runner's load_checkpoint."""
    big = nano_classifier(img_size=384, window_size=12)
    big.init_weights()
    ckpt = str(tmp_path / 'big.pth')
    save_checkpoint(big.state_dict(), ckpt)
    small = nano_classifier(img_size=224, window_size=7)
    load_checkpoint(small, ckpt, strict=True)
    table = 'backbone.stages.2.blocks.1.attn.rpe_table'
    assert big.state_dict()[table].shape[1:] == (47, 47)
    assert small.state_dict()[table].shape[1:] == (27, 27)
    # align_corners resizing keeps the corners and the centre (zero displacement)
    torch.testing.assert_close(small.state_dict()[table][:, 13, 13],
                               big.state_dict()[table][:, 23, 23])
    window = 'backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table'
    assert small.state_dict()[window].shape[0] == 13 * 13
    with torch.no_grad():
        assert torch.isfinite(small(torch.randn(1, 3, 64, 64), mode='tensor')).all()


@pytest.mark.parametrize('ckpt_arch,model_arch,words', [
    ('base', 'tiny', r'(?s)does not fit.*tensors of other shapes:.*'
     r'patch_embed\.projection\.weight: checkpoint \(128, 3, 4, 4\) vs model \(96, 3, 4, 4\)'),
    ('small', 'tiny', r'blocks per stage: checkpoint \[2, 2, 18, 2\] vs model \[2, 2, 6, 2\]; '
     r"only in the checkpoint: \['stages\.2\.blocks\.6', "),
    ('tiny', 'small', r"only in the checkpoint: \[\], only in the model: "
     r"\['stages\.2\.blocks\.6', "),
], ids=['base-into-tiny', 'small-into-tiny', 'tiny-into-small'])
def test_checkpoint_of_another_arch_fails_naming_keys_and_shapes(tmp_path, ckpt_arch,
                                                                  model_arch, words):
    """init_cfg=Pretrained loads non-strictly, where mmengine only warns of mismatches."""
    ckpt = str(tmp_path / f'{ckpt_arch}.pth')
    # only keys and shapes matter: one stored element per tensor keeps the file small
    save_checkpoint({k: torch.zeros((), dtype=v.dtype).expand(v.shape)
                     for k, v in DAT(ckpt_arch).state_dict().items()}, ckpt)
    with pytest.raises(RuntimeError, match=words):
        pretrained(ckpt, arch=model_arch)


# ------------------------------------------------------------------------ 3. bad input
def _nano(**kwargs):
    return lambda: DAT(**dict(dict(arch='nano'), **kwargs))


def _forward(x, **kwargs):
    return lambda: DAT(**dict(dict(arch='nano'), **kwargs))(x)


def _deform_forward(x, hw_shape=(4, 4)):
    mod = DeformableAttention(32, num_heads=4, groups=2, feat_size=(4, 4))
    return lambda: mod(x, hw_shape)


def _arch(stage, **changes):
    """The nano arch with the entries of ``stage`` in ``changes`` changed."""
    arch = {k: list(v) for k, v in NANO.items()}
    for key, value in changes.items():
        arch[key][stage] = value
    return arch


_NAN = torch.full((1, 3, 64, 64), 0.5).index_put_((torch.tensor([0]), torch.tensor([1]),
                                                   torch.tensor([7]), torch.tensor([9])),
                                                  torch.tensor(float('nan')))
_INF_TOKENS = torch.randn(2, 16, 32).index_fill_(1, torch.tensor([5]), float('inf'))

BAD = {
    # build time: the arch
    'unknown arch': (_nano(arch='huge'), ValueError, 'unknown arch'),
    'arch of a wrong type': (_nano(arch=3), TypeError, 'arch must be a str or a dict'),
    'custom arch missing keys': (
        _nano(arch={k: v for k, v in NANO.items() if k != 'groups'}), ValueError,
        r"misses keys \['groups'\]"),
    'custom arch with 3 stages': (
        _nano(arch=dict(NANO, depths=[2, 2, 2])), ValueError, 'depths needs 4 entries'),
    'groups not dividing heads': (
        _nano(arch=_arch(2, groups=3)), ValueError, 'num_heads 4 is not a multiple of '
        'groups 3'),
    'heads not dividing embed_dims': (
        _nano(arch=_arch(1, num_heads=3)), ValueError, 'not divisible by num_heads 3'),
    'zero depth': (_nano(arch=_arch(3, depths=0)), ValueError, 'depths entries'),
    # build time: the other arguments
    'negative offset range': (_nano(offset_range=-1.0), ValueError, 'offset_range'),
    'offset range of a wrong type': (_nano(offset_range='2'), ValueError, 'offset_range'),
    'out_indices out of range': (_nano(out_indices=(1, 4)), ValueError, 'out_indices'),
    'out_indices empty': (_nano(out_indices=()), TypeError, 'out_indices'),
    'frozen_stages too large': (_nano(frozen_stages=4), ValueError, 'frozen_stages'),
    'frozen_stages too small': (_nano(frozen_stages=-2), ValueError, 'frozen_stages'),
    'frozen_stages not an int': (_nano(frozen_stages=1.5), ValueError, 'frozen_stages'),
    'unknown pos_encoding': (_nano(pos_encoding='sinusoidal'), ValueError, 'pos_encoding'),
    'unknown stage_type': (
        _nano(stage_types=('swin', 'swin', 'deform', 'deformable')), ValueError,
        'stage_types'),
    'wrong length of stage_types': (
        _nano(stage_types=('swin', 'deformable', 'deformable')), ValueError,
        'stage_types needs 4 entries'),
    'wrong length of key_downsample': (
        _nano(key_downsample=(4, 2, 1)), ValueError, 'key_downsample needs 4 entries'),
    'key_downsample below 1': (_nano(key_downsample=(4, 2, 0, 1)), ValueError,
                               'key_downsample'),
    'even offset kernel': (_nano(offset_kernels=(9, 7, 4, 3)), ValueError, 'offset_kernels'),
    'window_size below 1': (_nano(window_size=0), ValueError, 'window_size'),
    'drop_path_rate of 1': (_nano(drop_path_rate=1.0), ValueError, 'drop_path_rate'),
    'negative drop_path_rate': (_nano(drop_path_rate=-0.1), ValueError, 'drop_path_rate'),
    'img_size too small': (_nano(img_size=16), ValueError, 'img_size'),
    'in_channels of 0': (_nano(in_channels=0), ValueError, 'in_channels'),
    'sr_ratios below 1': (_nano(stage_types='pvt', sr_ratios=0), ValueError, 'sr_ratios'),
    'ddetr_points below 1': (_nano(stage_types=('swin', 'swin', 'ddetr', 'ddetr'),
                                   ddetr_points=0), ValueError, 'ddetr_points'),
    # first forward
    'wrong in_channels of the input': (
        _forward(torch.randn(1, 4, 64, 64)), ValueError, r'3 input channels \(in_channels\)'),
    'non-4D input': (_forward(torch.randn(3, 64, 64)), ValueError, '4-D'),
    'not a tensor': (_forward([torch.randn(1, 3, 64, 64)]), ValueError, '4-D'),
    'integer image': (_forward(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)), TypeError,
                      'floating-point'),
    'image too small': (_forward(torch.randn(1, 3, 64, 31)), ValueError, 'at least 32x32'),
    'NaN in the image': (_forward(_NAN), ValueError, 'NaN or Inf'),
    'Inf into the deformable attention': (_deform_forward(_INF_TOKENS), ValueError,
                                          r'DeformableAttention: input x .* NaN or Inf'),
    'hw_shape not matching the tokens': (
        _deform_forward(torch.randn(2, 16, 32), hw_shape=(4, 5)), ValueError, 'hw_shape'),
    'tokens of another width': (
        _deform_forward(torch.randn(2, 16, 48)), ValueError, r'\(B, L, 32\)'),
    # DAT++
    'DAT++: bounded offset range': (_nano(arch='nano++', offset_range=2.0), ValueError,
                                    'offset_range .* < 0'),
    'DAT++: unknown attention letter': (_nano(arch='nano++', stage_types=('ND', 'NQ', 'ND',
                                                                          'DD')),
                                        ValueError, 'layout of the letters'),
    'DAT++: even neighbourhood kernel': (_nano(arch='nano++', neighborhood_kernel=6),
                                         ValueError, 'neighborhood_kernel'),
    'DAT++: unknown custom arch key': (
        _nano(arch=dict(DAT.arch_zoo['nano++'], conv_ffn=True)), ValueError,
        r"unknown keys \['conv_ffn'\]"),
    'DAT++: unknown family': (_nano(arch=dict(NANO, family='dat3')), ValueError,
                              'family must be one of'),
    'DAT++: NaN in the image': (_forward(_NAN, arch='nano++'), ValueError, 'NaN or Inf'),
    'DAT++: image too small': (_forward(torch.randn(1, 3, 20, 64), arch='nano++'), ValueError,
                               'at least 32x32'),
    'DAT++: wrong in_channels': (_forward(torch.randn(1, 1, 64, 64), arch='nano++'),
                                 ValueError, 'in_channels'),
    'DAT++: neighbourhood tokens not matching hw_shape': (
        lambda: NeighborhoodAttention(32, 2)(torch.randn(1, 16, 32), (4, 5)), ValueError,
        'hw_shape'),
}


@pytest.mark.parametrize('case', BAD, ids=list(BAD))
def test_bad_config_or_input_is_a_clear_error(case):
    fn, exc, words = BAD[case]
    with pytest.raises(exc, match=words):
        fn()


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_nan_checks_stay_out_of_traced_graphs():
    """FLOP counting traces the model with torch.jit: the data-dependent NaN/Inf checks are
    skipped there (a traced check would be frozen into the graph), but run eagerly."""
    model = nano_classifier().eval()
    x = torch.randn(1, 3, 64, 64)
    with _CallRecorder('isfinite') as eager:
        model(x, mode='tensor')
    assert len(eager.calls) == 1 + 2  # the image, then the deformable blocks of stages 3-4
    with _CallRecorder('isfinite') as traced:
        torch.jit.trace(model.backbone, x, check_trace=False)
    assert traced.calls == []
    info = get_model_complexity_info(model, input_shape=(3, 64, 64), show_table=False,
                                     show_arch=False)
    assert info['flops'] > 0


def test_nan_arising_inside_the_network_is_caught_at_the_deformable_attention():
    model = DAT('nano', drop_path_rate=0.)
    with torch.no_grad():
        model.stages[1].blocks[0].ffn.layers[1].bias[3] = float('inf')
    with pytest.raises(ValueError, match='DeformableAttention: input x'):
        model(torch.randn(1, 3, 64, 64))


# ------------------------------------------------------------------------ 4. mixed precision
class _CallRecorder(torch.overrides.TorchFunctionMode):
    """Records the calls of the named torch functions with their tensor arguments' dtypes."""

    def __init__(self, *names):
        super().__init__()
        self.names, self.calls = names, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, '__name__', '')
        if name in self.names:
            self.calls.append((name, *(a.dtype for a in args if isinstance(a, torch.Tensor))))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('pos_encoding', ['relative', 'none', 'fixed'])
def test_deformable_attention_samples_and_normalises_in_float32_under_bf16(pos_encoding):
    torch.manual_seed(0)
    mod = DeformableAttention(32, num_heads=4, groups=2, feat_size=(8, 8),
                              pos_encoding=pos_encoding)
    mod.init_weights()
    x = torch.randn(2, 64, 32)
    ref = mod(x, (8, 8))
    recorder = _CallRecorder('softmax', 'grid_sample')
    with torch.autocast('cpu', dtype=torch.bfloat16), recorder:
        out = mod(x, (8, 8))
        points = mod.deformed_points(mod.proj_q(x.transpose(1, 2).reshape(2, 32, 8, 8)))
    assert points.dtype == torch.float32
    softmax = [c for c in recorder.calls if c[0] == 'softmax']
    grids = [c for c in recorder.calls if c[0] == 'grid_sample']
    assert softmax and all(c[1] == torch.float32 for c in softmax)
    assert grids and all(c[1:] == (torch.float32, torch.float32) for c in grids)  # z, grid
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


def test_reference_points_are_exact_under_bf16():
    """In bfloat16 the points of a 56-cell grid would be off by up to a quarter cell."""
    mod = DeformableAttention(32, num_heads=4, groups=2, feat_size=(56, 56), use_offsets=False)
    q = torch.randn(1, 32, 56, 56)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        points = mod.deformed_points(mod.proj_q(q))
    assert torch.equal(points, mod.deformed_points(q))


def _batch(n=2, size=64):
    torch.manual_seed(1)
    samples = [DataSample().set_gt_label(i % 3) for i in range(n)]
    return torch.randn(n, 3, size, size), samples


@pytest.mark.parametrize('arch', ['nano', 'nano++'])
def test_bf16_autocast_forward_and_training_step_stay_finite(arch):
    torch.manual_seed(0)
    model = nano_classifier(drop_path_rate=0.1, arch=arch)
    model.init_weights()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, samples = _batch()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with torch.no_grad():
            logits = model(x, mode='tensor')
        losses = model(x, samples, mode='loss')
    assert torch.isfinite(logits).all()
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    # the offset networks learn (their gradient flows through the float32 sampling grid)
    offset_grads = [g for n, g in grads.items() if 'conv_offset.3' in n]
    assert offset_grads and all(g.abs().sum() > 0 for g in offset_grads)
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='fp16 AmpOptimWrapper needs CUDA')
def test_fp16_amp_optim_wrapper_training_step_on_cuda():
    from mmengine.optim import AmpOptimWrapper
    torch.manual_seed(0)
    model = nano_classifier(drop_path_rate=0.1).cuda()
    model.init_weights()
    wrapper = AmpOptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                              dtype='float16')
    x, samples = _batch()
    x = x.cuda()
    samples = [s.to('cuda') for s in samples]
    for _ in range(2):
        with wrapper.optim_context(model):
            losses = model(x, samples, mode='loss')
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        wrapper.update_params(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16):
        assert torch.isfinite(model(x, mode='tensor')).all()


# ------------------------------------------------------------------------ 5. determinism
def _seeded_run(data_root, work_dir, name):
    """One epoch with drop path and random flips: every source of randomness is seeded."""
    cfg = Config(train_cfg_dict(data_root, work_dir, seed=7, drop_path_rate=0.3, augment=True))
    cfg.train_cfg.max_epochs = 1
    cfg.experiment_name = name  # no shared MessageHub between the two runners
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0].tolist()
    return losses, runner.model.state_dict()


def test_seeded_cpu_training_is_deterministic(data_root, tmp_path, restore_determinism):
    losses_a, weights_a = _seeded_run(data_root, str(tmp_path / 'a'), 'determinism_a')
    assert torch.are_deterministic_algorithms_enabled()
    losses_b, weights_b = _seeded_run(data_root, str(tmp_path / 'b'), 'determinism_b')
    assert len(losses_a) == 3 and losses_a == losses_b
    for key, value in weights_a.items():
        assert torch.equal(value, weights_b[key]), key


def test_every_mmdat_config_replays_its_random_numbers_on_resume():
    configs = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                     if '_base_' not in p)
    assert len(configs) > 40
    missing = [osp.relpath(p, ROOT) for p in configs
               if dict(type='ResumableRandomnessHook') not in Config.fromfile(p).get(
                   'custom_hooks', [])]
    assert not missing, f'configs without ResumableRandomnessHook: {missing}'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('arch', ['nano', 'nano++'])
def test_no_host_device_synchronisation_on_cuda(arch):
    """The finiteness checks and the attention paths never block the CPU on the GPU."""
    model = DAT(arch, out_indices=(0, 1, 2, 3)).cuda().train()
    x = torch.randn(2, 3, 96, 128, device='cuda')
    model(x)  # first call: the neighbourhood tiling plans are made (on the CPU) and cached
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        sum(o.mean() for o in model(x)).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
