"""Run an exported mmdat model (tools/deployment/pytorch2onnx.py) on an image with onnxruntime.

    python tools/deployment/onnx_inference.py FILE IMAGE [--out OUT.png] [--topk K]
        [--score-thr S]

The config and task are read from the file's metadata; the image goes through the config's
test pipeline and data preprocessor (numpy). Classification prints the top-k classes;
segmentation prints the class areas and with ``--out`` writes the colour-coded label map
blended over the image; detection (the file's RoI-head graphs beside it are found by the
metadata) prints the detections scoring at least ``--score-thr`` in the original image's
pixels and with ``--out`` draws their boxes (and masks) over it.
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
    p.add_argument('--out', default=None,
                   help='where to draw the result (segmentation, detection)')
    p.add_argument('--topk', type=int, default=5, help='classes shown (classification)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='lowest score of the detections shown (detection)')
    return p.parse_args(argv)


def class_names(cfg):
    for key in ('test_dataloader', 'val_dataloader'):
        ds = cfg.get(key, {}).get('dataset', {})
        classes = ds.get('metainfo', {}).get('classes')
        if classes:
            return list(classes)
    return None


def palette(num_classes):
    """A fixed random BGR colour per class."""
    import numpy as np
    return np.random.RandomState(0).randint(0, 256, (num_classes, 3), dtype=np.uint8)


def show_detections(args, det, names):
    """Print (and with ``--out`` draw) the detections of ``det`` scoring ``--score-thr``."""
    import cv2
    import mmcv
    import numpy as np
    keep = det['scores'] >= args.score_thr
    print(f'  {int(keep.sum())} detections with score >= {args.score_thr} '
          f'(of {len(keep)}), boxes in the original image (x1, y1, x2, y2):')
    for box, score, label in zip(det['bboxes'][keep], det['scores'][keep],
                                 det['labels'][keep]):
        name = names[label] if names and label < len(names) else str(label)
        print(f'  {name}: {score:.3f} at ({", ".join(f"{v:.1f}" for v in box)})')
    if not args.out:
        return
    img = mmcv.imread(args.image).astype(np.float32)
    colours = palette(int(det['labels'].max()) + 1 if len(det['labels']) else 1)
    for i in np.flatnonzero(keep):
        colour = colours[det['labels'][i]]
        if 'masks' in det:
            m = det['masks'][i]
            img[m] = 0.5 * img[m] + 0.5 * colour
        x1, y1, x2, y2 = (int(round(float(v))) for v in det['bboxes'][i])
        cv2.rectangle(img, (x1, y1), (x2, y2), tuple(int(c) for c in colour), 1)
    mmcv.imwrite(img.astype(np.uint8), args.out)
    print(f'  drawn to {args.out}')


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import onnx
    from mmengine.config import Config
    from mmdat.deployment import load_onnx
    from mmdat.deployment.preprocess import preprocess

    meta = {p.key: p.value for p in onnx.load(args.file, load_external_data=False).metadata_props}
    if 'mmdat_config' not in meta:
        raise SystemExit(f'{args.file} has no mmdat metadata (export it with '
                         'tools/deployment/pytorch2onnx.py)')
    cfg = Config.fromstring(meta['mmdat_config'], '.py')
    task = meta['mmdat_task']
    x, results = preprocess(cfg, args.image)
    model = load_onnx(args.file)
    t = time.time()
    if task == 'detection':
        metas = [{k: results[k] for k in ('img_shape', 'ori_shape', 'scale_factor')
                  if k in results}]
        outs = model(x, metas)[0]
    else:
        outs = model(x)
    print(f'{args.file}: {task}, input {tuple(x.shape)}, {1000 * (time.time() - t):.1f} ms')
    names = class_names(cfg)
    if task == 'detection':
        show_detections(args, outs, names)
        return outs
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
            colours = palette(int(outs['seg_logits'].shape[1]))
            img = results['img'][:H, :W].astype(np.float32)
            mmcv.imwrite((0.5 * img + 0.5 * colours[labels]).astype(np.uint8), args.out)
            print(f'  drawn to {args.out}')
        return outs
    raise SystemExit(f'task {task!r} is not supported by this script')


if __name__ == '__main__':
    main()
