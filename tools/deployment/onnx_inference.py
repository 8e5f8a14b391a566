"""Run an exported mmdat model (tools/deployment/pytorch2onnx.py) on an image with onnxruntime.

    python tools/deployment/onnx_inference.py FILE IMAGE [--out OUT.png] [--topk K]

The config and task are read from the file's metadata; the image goes through the config's
test pipeline and data preprocessor (numpy). Classification prints the top-k classes;
segmentation prints the class areas and with ``--out`` writes the colour-coded label map
blended over the image.
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
    p.add_argument('file', help='the .onnx file')
    p.add_argument('image')
    p.add_argument('--out', default=None, help='where to draw the result (segmentation)')
    p.add_argument('--topk', type=int, default=5)
    return p.parse_args(argv)


def class_names(cfg):
    for key in ('test_dataloader', 'val_dataloader'):
        ds = cfg.get(key, {}).get('dataset', {})
        classes = ds.get('metainfo', {}).get('classes')
        if classes:
            return list(classes)
    return None


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import onnx
    from mmengine.config import Config
    from mmdat.deployment import OnnxModel
    from mmdat.deployment.preprocess import preprocess

    meta = {p.key: p.value for p in onnx.load(args.file, load_external_data=False).metadata_props}
    if 'mmdat_config' not in meta:
        raise SystemExit(f'{args.file} has no mmdat metadata (export it with '
                         'tools/deployment/pytorch2onnx.py)')
    cfg = Config.fromstring(meta['mmdat_config'], '.py')
    task = meta['mmdat_task']
    x, results = preprocess(cfg, args.image)
    model = OnnxModel(args.file)
    t = time.time()
    outs = model(x)
    print(f'{args.file}: {task}, input {tuple(x.shape)}, {1000 * (time.time() - t):.1f} ms')
    names = class_names(cfg)
    if task == 'classification':
        logits = outs['logits'][0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        for i in np.argsort(-p)[:args.topk]:
            label = names[i] if names and i < len(names) else str(i)
            print(f'  {label}: {p[i]:.4f}')
        return outs
    if task == 'segmentation':
        H, W = results['img'].shape[:2]
        labels = outs['seg_logits'][0].argmax(0)[:H, :W]
        for c, n in zip(*np.unique(labels, return_counts=True)):
            label = names[c] if names and c < len(names) else str(c)
            print(f'  {label}: {100 * n / labels.size:.1f} % of the pixels')
        if args.out:
            import mmcv
            rng = np.random.RandomState(0)
            palette = rng.randint(0, 256, (int(outs['seg_logits'].shape[1]), 3), dtype=np.uint8)
            img = results['img'][:H, :W].astype(np.float32)
            mmcv.imwrite((0.5 * img + 0.5 * palette[labels]).astype(np.uint8), args.out)
            print(f'  drawn to {args.out}')
        return outs
    raise SystemExit(f'task {task!r} is not supported by this script')


if __name__ == '__main__':
    main()
