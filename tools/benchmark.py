"""Throughput (images/s) and peak memory of a model, for inference and a training step.

    python tools/benchmark.py CONFIG [--other CONFIG ...] [--batch N] [--shape H W] [--train]
        [--iters N] [--warmup N] [--backbone-only] [--device cpu|cuda] [--no-amp]
        [--cfg-options k=v ...] [--other-cfg-options k=v ...] [--profile ROWS]
    python tools/benchmark.py --block deformable [--shape H W] [--batch N] [--r R]
        [--iters N] [--warmup N] [--chunk-size N]
    python tools/benchmark.py --block neighborhood [--shape H W] [--batch N] [--iters N]
        [--warmup N] [--chunk-size N] [--with-reference]
    python tools/benchmark.py --table [--iters N] [--warmup N] [--device cpu|cuda] [--no-amp]

What is timed, on random inputs (already normalised: no data loading or preprocessing):

* inference: the model's tensor-mode forward under ``torch.no_grad()``, in eval mode: the whole
  classifier for classification configs (``model(x, mode='tensor')``), backbone + neck
  (``model.extract_feat``) for detection and segmentation configs, only ``model.backbone``
  with ``--backbone-only``;
* training step (``--train``): the same forward in train mode, backward of the sum of the
  outputs' means, and an AdamW step (gradients set to None in between).

``--warmup`` steps are run first and excluded. With ``--other``, the models run alternately
in the same process (step of A, step of B, ...), so all see the same machine load, and the
ratios of images/s and peak memory are printed for every pair of models. On CUDA, forward/backward run under AMP
(float16 autocast, with a GradScaler for training) unless ``--no-amp``.

Peak memory, measured for one step after the timed ones:

* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus what
  was allocated before the step;
* CPU: the rise of the process's peak resident set size (``VmHWM`` of ``/proc/self/status``)
  over its resident size before the step. The peak is reset by writing ``5`` to
  ``/proc/self/clear_refs``, and freed heap memory is first returned to the OS with glibc's
  ``malloc_trim(0)``, so each measurement starts from the memory really in use. (torch's CPU
  allocations are invisible to ``tracemalloc``.)

``--block deformable``: one DAT-T stage-3 deformable block (``DAT(arch='tiny').stages[2]
.blocks[1]``: LayerNorm, deformable attention with key downsampling ``--r``, MLP) on the
stage-3 tokens of an ``--shape`` (H W) image, forward + backward, with the straightforward
(``impl='reference'``) and the memory-lean (``impl='chunked'``) attention; also checks that
both give the same output and input gradient.

``--table``: DAT-T, DAT-T++ and Swin-T (:data:`TABLE`) at 224 (the classifiers, batch 16), at
800x1280 (the Mask R-CNN configs' backbones) and at 512x2048 (the UperNet configs' backbones),
batch 1: inference and training step, images/s, peak memory, ratios to Swin-T, as one table.
DAT-T++'s detection and segmentation configs checkpoint its blocks (``with_cp=True``); it is
also timed without, like for like with Swin-T.

``--block neighborhood``: DAT++'s neighbourhood attention (``NeighborhoodAttention``, kernel 7)
on the stage-1 tokens of an ``--shape`` image (DAT-T++: 64 channels, 2 heads), forward +
backward, against mmpretrain's ``WindowMSA`` (window 7, explicit matmuls) on the same tokens
padded to whole windows and partitioned beforehand (the partitioning is not timed); the steps
alternate.
"""
import argparse
import contextlib
import ctypes
import gc
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


# ------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory of what runs inside ``with tracker.measure():`` (bytes in ``.peak``)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = None
        self.method = ('torch.cuda.max_memory_allocated' if self.device.type == 'cuda'
                       else 'VmHWM rise (clear_refs reset)')

    @staticmethod
    def _status(key):
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f'{key} not in /proc/self/status')

    @staticmethod
    def _trim():
        gc.collect()
        try:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: the baseline may include free heap
            pass

    @contextlib.contextmanager
    def measure(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - before
            return
        self._trim()
        before = self._status('VmRSS')
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
        except OSError as e:
            raise RuntimeError('cannot reset the peak RSS (/proc/self/clear_refs): CPU peak '
                               'memory is not measurable here') from e
        yield self
        self.peak = self._status('VmHWM') - before


def _sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def _autocast(device, amp):
    if amp and torch.device(device).type == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16)
    return contextlib.nullcontext()


def _scalar(outputs):
    """Sum of the means of every tensor in a (nested) output."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float().mean()
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return sum(_scalar(o) for o in outputs)


# ------------------------------------------------------------------------------- models
class Runner:
    """One model's inference and training steps on a fixed random batch."""

    def __init__(self, config, batch, shape, device, amp, backbone_only, cfg_options=None,
                 name=None):
        from mmdat.utils.complexity import build_model, load_config, paper_shape, task_of
        cfg = load_config(config, cfg_options)
        self.name = name or osp.basename(config.split('::')[-1])
        self.task = task_of(cfg)
        self.shape = tuple(shape) if shape else paper_shape(cfg)
        torch.manual_seed(0)
        model = build_model(cfg)
        self.model = model.to(device)
        if backbone_only:
            self.forward_fn, self.what = self.model.backbone, 'backbone'
        elif self.task == 'classification':
            self.forward_fn = lambda x: self.model(x, mode='tensor')
            self.what = 'classifier'
        else:
            self.forward_fn, self.what = self.model.extract_feat, 'backbone+neck'
        self.batch, self.device, self.amp = batch, device, amp
        self.inputs = torch.randn(batch, 3, *self.shape, device=device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.scaler = torch.amp.GradScaler('cuda', enabled=amp and self.device_type == 'cuda')

    @property
    def device_type(self):
        return torch.device(self.device).type

    def params(self):
        return sum(p.numel() for p in self.model.parameters())

    def infer(self):
        self.model.eval()
        with torch.no_grad(), _autocast(self.device, self.amp):
            self.forward_fn(self.inputs)

    def train_step(self):
        self.model.train()
        with _autocast(self.device, self.amp):
            loss = _scalar(self.forward_fn(self.inputs))
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def time_alternately(steps, iters, warmup, device):
    """Run ``steps`` (callables) alternately; seconds of each over the timed iterations."""
    totals = [0.0] * len(steps)
    for i in range(warmup + iters):
        for j, step in enumerate(steps):
            _sync(device)
            t = time.perf_counter()
            step()
            _sync(device)
            if i >= warmup:
                totals[j] += time.perf_counter() - t
    return totals


def peak(step, device):
    tracker = PeakMemory(device)
    with tracker.measure():
        step()
    return tracker.peak


def profile(step, device, rows):
    """torch.profiler's table of the ops of one step, by self time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if torch.device(device).type == 'cuda' else [])
    with torch_profile(activities=activities) as prof:
        step()
        _sync(device)
    key = 'self_cuda_time_total' if torch.device(device).type == 'cuda' else 'self_cpu_time_total'
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def benchmark_models(args):
    runners = [Runner(args.config, args.batch, args.shape, args.device, args.amp,
                      args.backbone_only, args.cfg_options)]
    for other in args.other or []:
        runners.append(Runner(other, args.batch, args.shape, args.device, args.amp,
                              args.backbone_only, args.other_cfg_options))
    return time_models(runners, args)


def time_models(runners, args):
    """Inference (and with ``args.train`` training) of the runners, alternately: printed and
    returned as {(name, mode): dict(images_per_s, peak_bytes)}."""
    modes = [('inference', 'infer')] + ([('train step', 'train_step')] if args.train else [])
    print(f'device: {args.device}'
          + (' (AMP float16)' if args.amp and torch.device(args.device).type == 'cuda' else
             f' ({torch.get_num_threads()} threads)' if args.device == 'cpu' else '')
          + f'; batch {args.batch}; {args.iters} timed iterations after {args.warmup} '
          f'warm-up; memory: {PeakMemory(args.device).method}')
    for r in runners:
        print(f'  {r.name}: {r.task}, {r.what} timed, input {r.batch}x3x{r.shape[0]}x'
              f'{r.shape[1]}, {r.params() / 1e6:.2f} M params')
    results = {}
    for mode, method in modes:
        seconds = time_alternately([getattr(r, method) for r in runners], args.iters,
                                   args.warmup, args.device)
        for r, s in zip(runners, seconds):
            mem = peak(getattr(r, method), args.device)
            ips = args.batch * args.iters / s
            results[(r.name, mode)] = dict(images_per_s=ips, peak_bytes=mem)
            print(f'{mode:<11} {r.name:<48} {ips:9.2f} images/s  '
                  f'{1000 * s / args.iters:9.1f} ms/iter  peak memory {mem / 2**20:9.1f} MiB')
        if args.profile:
            for r in runners:
                print(f'--- {mode}, {r.name}: top {args.profile} ops by self time, one step')
                print(profile(getattr(r, method), args.device, args.profile))
        for i, first in enumerate(runners):
            for other in runners[i + 1:]:
                a, b = results[(first.name, mode)], results[(other.name, mode)]
                print(f'{mode:<11} ratio {first.name} / {other.name}: images/s '
                      f'{a["images_per_s"] / b["images_per_s"]:.3f}, peak memory '
                      f'{a["peak_bytes"] / max(b["peak_bytes"], 1):.3f}')
    return results


#: ``--table``: (setting, input (H, W), batch, backbone only, its models as (name, config,
#: cfg-options)). DAT-T++'s detection and segmentation configs checkpoint the backbone's
#: blocks (``with_cp=True``, the authors' setting), which recomputes each block's forward in
#: the backward pass; its "no checkpointing" rows compare like for like with Swin-T.
_DAT_PP_NO_CP = ('DAT-T++, no checkpointing', {'model.backbone.with_cp': False})
TABLE = [
    ('224 classification', (224, 224), 16, False, [
        ('DAT-T', 'configs/classification/dat_t_in1k.py', None),
        ('DAT-T++', 'configs/classification/dat_pp_t_in1k.py', None),
        ('Swin-T', 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py', None)]),
    ('800x1280 detection backbone', (800, 1280), 1, True, [
        ('DAT-T', 'configs/detection/mask_rcnn_dat_t_1x.py', None),
        ('DAT-T++', 'configs/detection/mask_rcnn_dat_pp_t_1x.py', None),
        (_DAT_PP_NO_CP[0], 'configs/detection/mask_rcnn_dat_pp_t_1x.py', _DAT_PP_NO_CP[1]),
        ('Swin-T', 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', None)]),
    ('512x2048 segmentation backbone', (512, 2048), 1, True, [
        ('DAT-T', 'configs/segmentation/upernet_dat_t_160k.py', None),
        ('DAT-T++', 'configs/segmentation/upernet_dat_pp_t_160k.py', None),
        (_DAT_PP_NO_CP[0], 'configs/segmentation/upernet_dat_pp_t_160k.py', _DAT_PP_NO_CP[1]),
        ('Swin-T', 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-'
         '512x512.py', None)]),
]


def benchmark_table(args):
    """Every setting of :data:`TABLE`, its models alternately; then one table (ratios to the
    setting's last model, Swin-T)."""
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    args = argparse.Namespace(**dict(vars(args), train=True))
    rows = []
    for setting, shape, batch, backbone_only, models in TABLE:
        print(f'=== {setting}')
        runners = [Runner(c if '::' in c else osp.join(repo, c), batch, shape, args.device,
                          args.amp, backbone_only, options, name=name)
                   for name, c, options in models]
        results = time_models(runners, argparse.Namespace(**dict(vars(args), batch=batch)))
        rows.append((setting, batch, [(name, {m: results[(name, m)] for m in
                                              ('inference', 'train step')})
                                      for name, _, _ in models]))
    print('\n| setting | model | inference img/s | vs Swin-T | training img/s | vs Swin-T '
          '| training peak memory | vs Swin-T |')
    print('|---|---|---|---|---|---|---|---|')
    for setting, batch, models in rows:
        swin = models[-1][1]
        for name, r in models:
            inf, train = r['inference'], r['train step']
            print(f'| {setting}, batch {batch} | {name} | {inf["images_per_s"]:.2f} | '
                  f'{inf["images_per_s"] / swin["inference"]["images_per_s"]:.2f}x | '
                  f'{train["images_per_s"]:.3f} | '
                  f'{train["images_per_s"] / swin["train step"]["images_per_s"]:.2f}x | '
                  f'{train["peak_bytes"] / 2**20:.0f} MiB | '
                  f'{train["peak_bytes"] / max(swin["train step"]["peak_bytes"], 1):.2f}x |')
    return rows


# ------------------------------------------------------------------------------- block
def benchmark_block(args):
    from mmdat.models.backbones import DAT
    H, W = args.shape or (800, 1333)
    torch.manual_seed(0)
    backbone = DAT(arch='tiny', key_downsample=args.r, drop_path_rate=0.)
    block = backbone.stages[2].blocks[1].to(args.device)
    attn = block.attn
    if args.chunk_size:
        attn.chunk_size = args.chunk_size
    stride = 16
    hw = (-(-H // stride), -(-W // stride))
    Hk, Wk = attn.key_grid_size(*hw)
    x0 = torch.randn(args.batch, hw[0] * hw[1], attn.embed_dims, device=args.device)
    print(f'device: {args.device}'
          + (f' ({torch.get_num_threads()} threads)' if args.device == 'cpu' else '')
          + f'; DAT-T stage-3 deformable block, {H}x{W} image -> {hw[0]}x{hw[1]} = '
          f'{hw[0] * hw[1]} queries, r = {args.r}: {Hk}x{Wk} = {Hk * Wk} keys, '
          f'{attn.num_heads} heads, {attn.groups} groups, chunks of <= {attn.chunk_size} '
          f'logits; batch {args.batch}; '
          f'forward+backward, {args.iters} timed after {args.warmup} warm-up; memory: '
          f'{PeakMemory(args.device).method}')

    def step(keep=None):
        x = x0.clone().requires_grad_()
        out = block(x, hw)
        out.float().pow(2).mean().backward()
        if keep is not None:
            keep.update(out=out.detach(), grad=x.grad)
        block.zero_grad(set_to_none=True)

    results, kept = {}, {}
    for impl in args.impls:
        attn.impl = impl
        kept[impl] = {}
        mem = peak(lambda: step(kept[impl]), args.device)
        (seconds, ) = time_alternately([step], args.iters, args.warmup, args.device)
        results[impl] = dict(seconds=seconds / args.iters, peak_bytes=mem)
        print(f'{impl:<10} {1000 * seconds / args.iters:10.1f} ms/iter   '
              f'peak memory {mem / 2**20:9.1f} MiB')
    if len(args.impls) == 2:
        a, b = (results[i] for i in args.impls)
        ka, kb = (kept[i] for i in args.impls)
        print(f'{args.impls[1]} / {args.impls[0]}: time {b["seconds"] / a["seconds"]:.3f}, '
              f'peak memory {b["peak_bytes"] / max(a["peak_bytes"], 1):.3f}; max |diff| '
              f'output {(ka["out"] - kb["out"]).abs().max():.2e}, input grad '
              f'{(ka["grad"] - kb["grad"]).abs().max():.2e}')
    return results


def benchmark_neighborhood_block(args):
    """DAT++'s neighbourhood attention vs mmpretrain's WindowMSA (window 7) on the same tokens:
    a DAT-T++ stage-1 map (64 channels, 2 heads) of an ``--shape`` image."""
    from mmpretrain.models.utils.attention import WindowMSA

    from mmdat.models.layers.neighborhood_attention import NeighborhoodAttention
    H, W = args.shape or (800, 1333)
    hw = (-(-H // 4), -(-W // 4))
    C, M, w = 64, 2, 7
    torch.manual_seed(0)
    na = NeighborhoodAttention(C, M).to(args.device)
    na.init_weights()
    if args.chunk_size:
        na.chunk_size = args.chunk_size
    wmsa = WindowMSA(C, (w, w), M).to(args.device)
    x0 = torch.randn(args.batch, hw[0] * hw[1], C, device=args.device)
    # WindowMSA's input: the same tokens, padded to whole windows and partitioned (done once,
    # outside the timing: WindowMSA alone is timed)
    Hp, Wp = -(-hw[0] // w) * w, -(-hw[1] // w) * w
    xw = torch.nn.functional.pad(x0.reshape(args.batch, *hw, C),
                                 (0, 0, 0, Wp - hw[1], 0, Hp - hw[0]))
    xw = xw.reshape(args.batch, Hp // w, w, Wp // w, w, C).permute(0, 1, 3, 2, 4, 5)
    xw = xw.reshape(-1, w * w, C).contiguous()
    print(f'device: {args.device}'
          + (f' ({torch.get_num_threads()} threads)' if args.device == 'cpu' else '')
          + f'; {H}x{W} image -> stage-1 map {hw[0]}x{hw[1]} = {hw[0] * hw[1]} tokens, {C} '
          f'channels, {M} heads, batch {args.batch}; forward+backward, {args.iters} timed '
          f'after {args.warmup} warm-up, alternated; memory: {PeakMemory(args.device).method}')

    def step(module, x, *extra):
        def run():
            xi = x.clone().requires_grad_()
            module(xi, *extra).float().pow(2).mean().backward()
            module.zero_grad(set_to_none=True)
        return run

    steps = {f'neighborhood ({na.impl})': step(na, x0, hw),
             'WindowMSA (mmpretrain)': step(wmsa, xw)}
    if args.with_reference:
        def reference():
            na.impl = 'reference'
            try:
                step(na, x0, hw)()
            finally:
                na.impl = 'auto'
        steps['neighborhood (reference)'] = reference
    mems = {name: peak(fn, args.device) for name, fn in steps.items()}
    seconds = time_alternately(list(steps.values()), args.iters, args.warmup, args.device)
    results = {}
    for (name, mem), s in zip(mems.items(), seconds):
        results[name] = dict(seconds=s / args.iters, peak_bytes=mem)
        print(f'{name:<28} {1000 * s / args.iters:10.1f} ms/iter   '
              f'peak memory {mem / 2**20:9.1f} MiB')
    a, b = results[f'neighborhood ({na.impl})'], results['WindowMSA (mmpretrain)']
    print(f'neighborhood / WindowMSA: time {a["seconds"] / b["seconds"]:.3f}, peak memory '
          f'{a["peak_bytes"] / max(b["peak_bytes"], 1):.3f}')
    return results


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='config file or pkg::path')
    parser.add_argument('--other', nargs='+', metavar='CONFIG',
                        help='more configs, run alternately with the first (ratios are '
                        'printed for every pair)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'),
                        help="input size (default: the paper's for the config's task; "
                        '800 1333 for --block)')
    parser.add_argument('--train', action='store_true', help='also time a training step')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--backbone-only', action='store_true')
    parser.add_argument('--profile', type=int, default=0, metavar='ROWS',
                        help='also print the top ROWS ops of one step of each model '
                        '(torch.profiler, by self time)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--no-amp', dest='amp', action='store_false',
                        help='on CUDA, run in float32')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG')
    parser.add_argument('--other-cfg-options', nargs='+', action=DictAction,
                        help='override settings of the --other configs')
    parser.add_argument('--block', choices=['deformable', 'neighborhood'],
                        help='micro-benchmark one DAT-T stage-3 deformable block, or DAT++\'s '
                        'neighbourhood attention against WindowMSA, instead of a config')
    parser.add_argument('--table', action='store_true',
                        help='the whole comparison: DAT-T, DAT-T++ and Swin-T at 224 '
                        '(classifier, batch 16), 800x1280 (detection backbone) and 512x2048 '
                        '(segmentation backbone), inference and training step')
    parser.add_argument('--r', type=int, default=1, help='--block: key downsampling r')
    parser.add_argument('--impls', nargs='+', default=['reference', 'chunked'],
                        choices=['reference', 'chunked', 'auto'],
                        help='--block deformable: DeformableAttention.impl values to compare')
    parser.add_argument('--with-reference', action='store_true',
                        help='--block neighborhood: also time the definition (K*K key copies)')
    parser.add_argument('--chunk-size', type=int,
                        help="--block: the chunked path's bound on one chunk's logits "
                        '(elements; default: DeformableAttention.chunk_size)')
    args = parser.parse_args(argv)
    if sum(map(bool, (args.config, args.block, args.table))) != 1:
        parser.error('give a CONFIG, --block or --table')
    if args.iters < 1 or args.warmup < 0 or args.batch < 1:
        parser.error('--iters and --batch must be >= 1, --warmup >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    import mmdat  # noqa: F401
    if args.table:
        return benchmark_table(args)
    if args.block == 'neighborhood':
        return benchmark_neighborhood_block(args)
    if args.block:
        return benchmark_block(args)
    return benchmark_models(args)


if __name__ == '__main__':
    main()
