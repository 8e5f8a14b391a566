"""Export the model of an mmdat config to ONNX (the normalised image tensor in, the task's
outputs out), and check it against PyTorch in onnxruntime.

    python tools/deployment/pytorch2onnx.py CONFIG [--checkpoint CKPT] --out FILE
        [--shape H W] [--batch N] [--dynamic] [--dynamo] [--opset N] [--no-check]
        [--bench N] [--threads N] [--cfg-options k=v ...]

Outputs (graph names): classification ``logits`` (B, classes); segmentation ``seg_logits``
(B, classes, H, W) at the input size; detection: per-anchor ``scores_<l>``, ``boxes_<l>`` (and
a two-stage detector's RoI heads in FILE's siblings ``*.roi_bbox.onnx``, ``*.roi_mask.onnx``),
which ``mmdat.deployment.OnnxDetector`` turns into detections as the detector's ``predict``.
``--dynamic``: one file for any batch and input size. Without ``--checkpoint`` the weights
are random. See README "Deployment".
"""
import argparse
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.realpath(__file__))))
if osp.isfile(osp.join(ROOT, 'mmdat', '__init__.py')):
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--checkpoint', default=None)
    p.add_argument('--out', required=True, help='the .onnx file to write')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                   help='example input size (default: 224x224 classification, 512x512 '
                   'segmentation, 800x1216 detection)')
    p.add_argument('--batch', type=int, default=1, help='example batch size')
    p.add_argument('--dynamic', action='store_true',
                   help='symbolic batch, height and width')
    p.add_argument('--dynamo', action='store_true',
                   help="torch.export-based exporter (default: the TorchScript-based one)")
    p.add_argument('--opset', type=int, default=None,
                   help='ONNX opset (default: 17, with --dynamo 18)')
    p.add_argument('--no-check', action='store_true',
                   help='skip the onnxruntime vs PyTorch comparison')
    p.add_argument('--bench', type=int, default=0, metavar='N',
                   help='also time N forwards of onnxruntime and of PyTorch eager on the example '
                   'input (after one warm-up each; detectors: with their post-processing)')
    p.add_argument('--threads', type=int, default=None,
                   help='threads of PyTorch and onnxruntime for the check and --bench '
                   '(default: their own defaults)')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE')
    return p.parse_args(argv)


def timed(fn, repeats):
    """Mean milliseconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - t) / repeats


def check_detector(model, x, session):
    """onnxruntime vs ``model.predict`` on ``x``: one line of differences, and the two
    callables that are timed."""
    from mmdat.deployment.check import (detection_metas, match_detections, summarise,
                                        torch_detections)
    metas = detection_metas(x)
    ref = torch_detections(model, x, metas)
    got = session(x.numpy(), metas)
    line = summarise([match_detections(r, g) for r, g in zip(ref, got)])
    print(f'onnxruntime vs PyTorch model.predict, {len(x)} image(s) {tuple(x.shape[2:])}: {line}')
    return (lambda: torch_detections(model, x, metas)), (lambda: session(x.numpy(), metas))


def check_tensors(model, task, x, session):
    """onnxruntime vs the exported PyTorch module on ``x``: the largest difference per output,
    and the two callables that are timed."""
    import numpy as np
    import torch
    from mmdat.deployment import export_module
    module, names = export_module(model, task)
    with torch.no_grad():
        ref = module(x)
    ref = ref if isinstance(ref, (tuple, list)) else [ref]
    got = session(x.numpy())
    for name, r in zip(names, ref):
        diff = float(np.abs(got[name] - r.numpy()).max())
        print(f'onnxruntime vs PyTorch, {name} {tuple(r.shape)}: max abs difference {diff:.2e}')

    def eager():
        with torch.no_grad():
            module(x)

    return eager, (lambda: session(x.numpy()))


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmdat.deployment import ExportError, build_export_model, export_model, load_onnx
    from mmdat.deployment.export import export_shape

    overrides = {}
    for item in args.cfg_options:
        key, _, value = item.partition('=')
        try:
            import ast
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    try:
        cfg, task, model = build_export_model(args.config, args.checkpoint, overrides)
        H, W = args.shape or export_shape(cfg, task)
        torch.manual_seed(0)
        x = torch.randn(args.batch, 3, H, W)
        t = time.time()
        files = export_model(cfg, task, model, x, args.out, dynamic=args.dynamic,
                             dynamo=args.dynamo, opset=args.opset)
    except ExportError as e:
        raise SystemExit(f'pytorch2onnx: cannot export {args.config}: {e}')
    print(f'exported the {task} model of {args.config} to {", ".join(files)} '
          f'({time.time() - t:.1f} s, {"dynamo" if args.dynamo else "TorchScript"} exporter, '
          f'{"dynamic" if args.dynamic else "static"} shapes)')
    if args.no_check:
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    session = load_onnx(args.out, threads=args.threads)
    if task == 'detection':
        eager, ort = check_detector(model, x, session)
    else:
        eager, ort = check_tensors(model, task, x, session)
    if args.bench:
        eager_ms, ort_ms = timed(eager, args.bench), timed(ort, args.bench)
        print(f'time per forward of a {tuple(x.shape)} input ({torch.get_num_threads()} torch '
              f'threads): onnxruntime {ort_ms:.1f} ms, PyTorch eager {eager_ms:.1f} ms '
              f'({eager_ms / ort_ms:.2f}x)')


if __name__ == '__main__':
    main()
