"""Export the model of an mmdat config to ONNX (the normalised image tensor in, the task's
outputs out), and check it against PyTorch in onnxruntime.

    python tools/deployment/pytorch2onnx.py CONFIG [--checkpoint CKPT] --out FILE
        [--shape H W] [--batch N] [--dynamic] [--dynamo] [--opset N] [--no-check]
        [--bench N] [--cfg-options k=v ...]

Outputs (graph names): classification ``logits`` (B, classes); segmentation ``seg_logits``
(B, classes, H, W) at the input size. ``--dynamic``: one file for any batch and input size
(with ``--dynamo``: heights and widths that are multiples of 32). Without ``--checkpoint`` the
weights are random. See README "Deployment".
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
                   'segmentation)')
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
                   'input (after one warm-up each)')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import torch
    from mmdat.deployment import ExportError, build_export_model, export_module, export_onnx
    from mmdat.deployment.export import add_metadata, export_shape

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
        module, names = export_module(model, task)
        H, W = args.shape or export_shape(cfg, task)
        torch.manual_seed(0)
        x = torch.randn(args.batch, 3, H, W)
        t = time.time()
        export_onnx(module, x, args.out, names, dynamic=args.dynamic, dynamo=args.dynamo,
                    opset=args.opset)
        add_metadata(args.out, cfg, task)
    except ExportError as e:
        raise SystemExit(f'pytorch2onnx: cannot export {args.config}: {e}')
    print(f'exported {task} model of {args.config} to {args.out} ({time.time() - t:.1f} s, '
          f'{"dynamo" if args.dynamo else "TorchScript"} exporter, '
          f'{"dynamic" if args.dynamic else "static"} shapes, outputs {names})')
    if args.no_check:
        return
    from mmdat.deployment import OnnxModel
    session = OnnxModel(args.out)
    with torch.no_grad():
        ref = module(x)
    ref = ref if isinstance(ref, (tuple, list)) else [ref]
    got = session(x.numpy())
    for name, r in zip(names, ref):
        diff = float(np.abs(got[name] - r.numpy()).max())
        print(f'onnxruntime vs PyTorch, {name} {tuple(r.shape)}: max abs difference {diff:.2e}')
    if args.bench:
        def timed(fn):
            fn()
            t = time.perf_counter()
            for _ in range(args.bench):
                fn()
            return 1000 * (time.perf_counter() - t) / args.bench

        with torch.no_grad():
            eager = timed(lambda: module(x))
        ort = timed(lambda: session(x.numpy()))
        print(f'time per forward of a {tuple(x.shape)} input ({torch.get_num_threads()} torch '
              f'threads): onnxruntime {ort:.1f} ms, PyTorch eager {eager:.1f} ms '
              f'({eager / ort:.2f}x)')


if __name__ == '__main__':
    main()
