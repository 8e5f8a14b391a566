"""Detection export (mmdat.deployment.detection, .postprocess, .runtime.OnnxDetector): the
exported graphs with dynamic axes run in onnxruntime at two batch sizes and two input sizes,
and their post-processing gives the detections of the detector's own ``predict``: same labels,
boxes within 0.5 px, scores within 1e-3, masks equal but for a few pixels.

The default tests use random weights (whose scores spread over many boxes, so every step of
the post-processing is exercised); the slow ones train the demo's detectors on the generated
shapes with tools/train.py and compare on held-out images."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from mmdat.deployment import ExportError, build_export_model, export_model  # noqa: E402
from mmdat.deployment import load_onnx  # noqa: E402
from mmdat.deployment import postprocess as post  # noqa: E402
from mmdat.deployment.check import (detection_metas, match_detections,  # noqa: E402
                                    torch_detections)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MASK_RCNN = osp.join(ROOT, 'configs/demo/dat_nano_shapes_det.py')
RETINANET = osp.join(ROOT, 'configs/deployment/retinanet_dat_nano_shapes.py')
CASCADE = osp.join(ROOT, 'configs/detection/cascade_mask_rcnn_dat_t_1x.py')
NANO = {'model.backbone.arch': 'nano', 'model.backbone.img_size': 64,
        'model.backbone.init_cfg': None, 'model.neck.in_channels': [32, 64, 128, 256]}
NANO_PP = {'model.backbone.arch': 'nano++'}
# the acceptance: boxes (px), scores, and the share of a mask's pixels that may differ
BOX_TOL, SCORE_TOL, MASK_TOL = 0.5, 1e-3, 0.01


def assert_same_detections(ref, got, min_score=0.):
    """Every detection scoring ``min_score`` has its partner (same label) on the other side,
    within the tolerances."""
    stats = match_detections(ref, got, min_score)
    assert len(stats['unmatched_ref']) == 0, ref['scores'][stats['unmatched_ref']]
    assert len(stats['unmatched_got']) == 0, got['scores'][stats['unmatched_got']]
    assert len(stats['box']) and stats['box'].max() <= BOX_TOL
    assert stats['score'].max() <= SCORE_TOL
    if 'masks' in ref:
        assert stats['mask'].max() <= MASK_TOL
    return stats


def check_outputs(det, num_classes, img_shape, with_mask):
    assert det['bboxes'].dtype == np.float32 and det['bboxes'].shape == (len(det['scores']), 4)
    assert det['scores'].dtype == np.float32 and det['labels'].dtype == np.int64
    assert np.all(np.diff(det['scores']) <= 0)  # by decreasing score, as mmdet's
    assert np.all((det['labels'] >= 0) & (det['labels'] < num_classes))
    h, w = img_shape
    boxes = det['bboxes']
    assert np.all(boxes >= 0) and np.all(boxes[:, 0::2] <= w) and np.all(boxes[:, 1::2] <= h)
    if with_mask:
        assert det['masks'].dtype == bool and det['masks'].shape == (len(det['scores']), h, w)


def export_and_compare(tmp_path, config, overrides, example, batches, dynamo=False):
    """Export with dynamic axes at ``example``; per (shape, img_shapes) of ``batches``, the
    onnxruntime detections equal ``model.predict``'s."""
    torch.manual_seed(0)
    cfg, task, model = build_export_model(config, overrides=overrides)
    files = export_model(cfg, task, model, torch.randn(*example), str(tmp_path / 'det.onnx'),
                         dynamic=True, dynamo=dynamo)
    detector = load_onnx(files[0])
    with_mask = getattr(model, 'with_mask', False)
    head = model.roi_head.bbox_head if hasattr(model, 'roi_head') else model.bbox_head
    num_classes = (head[-1] if isinstance(head, torch.nn.ModuleList) else head).num_classes
    for shape, img_shapes in batches:
        x = torch.randn(*shape)
        metas = detection_metas(x, img_shapes)
        ref = torch_detections(model, x, metas)
        got = detector(x.numpy(), metas)
        for r, g, m in zip(ref, got, metas):
            check_outputs(g, num_classes, m['ori_shape'], with_mask)
            assert len(g['scores']) > 10  # random weights: many detections
            assert_same_detections(r, g)
    return files


# two input sizes and two batch sizes; in the batch of two the images fill different parts of
# the padded input (mmdet clips each image's boxes to its own size)
BATCHES = [((1, 3, 128, 160), None), ((2, 3, 96, 128), [(96, 128), (80, 100)])]


@pytest.mark.parametrize('overrides,dynamo', [
    (None, False), (NANO_PP, False), (None, True),
    pytest.param(NANO_PP, True, marks=pytest.mark.slow)],
    ids=['dat-torchscript', 'dat++-torchscript', 'dat-dynamo', 'dat++-dynamo'])
def test_mask_rcnn_dynamic(tmp_path, overrides, dynamo):
    files = export_and_compare(tmp_path, MASK_RCNN, overrides, (1, 3, 128, 160), BATCHES,
                               dynamo=dynamo)
    assert [osp.basename(f) for f in files] == ['det.onnx', 'det.roi_bbox.onnx',
                                                'det.roi_mask.onnx']


@pytest.mark.parametrize('dynamo', [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=['torchscript', 'dynamo'])
def test_retinanet_dynamic(tmp_path, dynamo):
    files = export_and_compare(tmp_path, RETINANET, None, (1, 3, 128, 160), BATCHES,
                               dynamo=dynamo)
    assert len(files) == 1


def test_cascade_mask_rcnn_dynamic(tmp_path):
    # the full-width heads (80 classes: random softmax scores near 1 / 81, below the 0.05
    # threshold) on DAT-nano, with fewer proposals
    overrides = dict(NANO, **{'model.test_cfg.rpn.max_per_img': 100,
                              'model.test_cfg.rcnn.score_thr': 0.01})
    export_and_compare(tmp_path, CASCADE, overrides, (1, 3, 96, 128), BATCHES[1:])


def test_nms_equals_mmcv():
    from mmcv.ops import batched_nms, nms
    rng = np.random.RandomState(0)
    xy = rng.uniform(0, 80, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 40, (300, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    idxs = rng.randint(0, 4, 300)
    for thr in (0.3, 0.7):
        _, keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr)
        np.testing.assert_array_equal(post.nms(boxes, scores, thr), keep.numpy())
        for split_thr in (10000, 100):  # offset boxes, then one NMS per group
            cfg = dict(type='nms', iou_threshold=thr, split_thr=split_thr)
            _, keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                  torch.from_numpy(idxs), cfg)
            np.testing.assert_array_equal(post.batched_nms(boxes, scores, idxs, cfg),
                                          keep.numpy())
    with pytest.raises(ValueError, match='soft_nms'):
        post.batched_nms(boxes, scores, idxs, dict(type='soft_nms', iou_threshold=0.5))


def test_paste_masks_equal_mmdet():
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    rng = np.random.RandomState(0)
    probs = rng.uniform(0, 1, (6, 28, 28)).astype(np.float32)
    # inside, across the border, sub-pixel and degenerate (zero width) boxes
    boxes = np.asarray([[10, 12, 50, 40], [-5, 30, 20, 70.5], [60.2, 50.7, 99, 79.9],
                        [30, 30, 30.6, 31.2], [40, 5, 40, 25], [0, 0, 100, 80]], np.float32)
    got = post.paste_masks(probs, boxes, 80, 100, 0.5)
    for i in range(len(probs)):
        ref = np.zeros((80, 100), bool)
        chunk, where = _do_paste_mask(torch.from_numpy(probs[i:i + 1, None]),
                                      torch.from_numpy(boxes[i:i + 1]), 80, 100, True)
        ref[where] = (chunk[0] >= 0.5).numpy()
        assert (got[i] != ref).mean() < 1e-3, i


def test_detector_export_errors(tmp_path):
    _, _, model = build_export_model(MASK_RCNN)
    x = torch.randn(1, 3, 64, 64)
    from mmdat.deployment.detection import export_detector
    model.roi_head.bbox_head.bbox_coder = type('TBLRBBoxCoder', (), {})()
    with pytest.raises(ExportError, match=r'roi_head.bbox_head\[0\]: its box coder '
                       'TBLRBBoxCoder'):
        export_detector(model, x, str(tmp_path / 'x.onnx'))


# --- trained checkpoints (slow): tools/train.py on the generated shapes -----------------

#: the generated training images, and per detector its epochs and learning rate; RetinaNet
#: starts from the trained Mask R-CNN (its backbone: from scratch, RetinaNet's focal loss
#: needs several times as many iterations on these shapes)
NUM_TRAIN = 96
TRAIN = {MASK_RCNN: dict(epochs=16, lr=1e-3),
         RETINANET: dict(epochs=20, lr=1e-3, load_from=MASK_RCNN)}


def _tool(script):
    return osp.join(ROOT, 'tools/deployment', script)


def _train(config, work_dir, data_root, load_from=None):
    """A checkpoint of ``config`` trained on ``data_root`` by tools/train.py (from the
    weights of the checkpoint ``load_from`` that fit)."""
    options = {f'{split}_dataloader.dataset.data_root': data_root
               for split in ('train', 'val', 'test')}
    options.update({f'{split}_evaluator.ann_file':
                    osp.join(data_root, 'annotations/instances_val.json')
                    for split in ('val', 'test')})
    epochs = TRAIN[config]['epochs']
    options.update({'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
                    'default_hooks.checkpoint.interval': epochs,
                    'optim_wrapper.optimizer.lr': TRAIN[config]['lr']})
    if load_from:
        options['load_from'] = load_from
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work_dir,
           '--cfg-options'] + [f'{k}={v}' for k, v in options.items()]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return osp.join(work_dir, f'epoch_{epochs}.pth')


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    """The generated shapes (train and held-out), and a checkpoint per detector config,
    trained on first use."""
    from mmdat.datasets.synthetic import make_detection
    root = tmp_path_factory.mktemp('shapes')
    data_root = make_detection(str(root / 'data'), num_train=NUM_TRAIN, num_val=8,
                               size=(128, 160), seed=0)
    checkpoints = {}

    def checkpoint(config):
        if config not in checkpoints:
            start = TRAIN[config].get('load_from')
            work_dir = str(root / osp.splitext(osp.basename(config))[0])
            checkpoints[config] = _train(config, work_dir, data_root,
                                         checkpoint(start) if start else None)
        return checkpoints[config]

    return data_root, checkpoint


def shape_recall(data_root, images, dets, min_score=0.3, min_iou=0.5):
    """The share of the held-out ``images``' shapes found by a detection (``dets``, in the
    images' pixels) of their class scoring at least ``min_score``, at IoU ``min_iou``."""
    import json
    with open(osp.join(data_root, 'annotations/instances_val.json')) as f:
        coco = json.load(f)
    image_ids = {im['file_name']: im['id'] for im in coco['images']}
    found = []
    for image, det in zip(images, dets):
        for ann in coco['annotations']:
            if ann['image_id'] != image_ids[osp.basename(image)]:
                continue
            x, y, w, h = ann['bbox']
            keep = (det['scores'] >= min_score) & (det['labels'] == ann['category_id'] - 1)
            boxes = det['bboxes'][keep]
            inter = (np.clip(np.minimum(boxes[:, 2], x + w) - np.maximum(boxes[:, 0], x), 0,
                             None) *
                     np.clip(np.minimum(boxes[:, 3], y + h) - np.maximum(boxes[:, 1], y), 0,
                             None))
            union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + w * h - inter
            found.append(bool(len(boxes)) and (inter / union).max() >= min_iou)
    return np.mean(found)


def preprocessed_batch(cfg, images, scale):
    """The held-out ``images`` through the config's test pipeline with the Resize ``scale``
    and its data preprocessor, as one batch, with their mmdet metas."""
    from mmdat.deployment.preprocess import preprocess
    cfg = cfg.copy()
    cfg.test_pipeline = [dict(s, scale=scale) if s['type'] == 'Resize' else s
                         for s in cfg.test_pipeline]
    xs, metas = [], []
    for image in images:
        x, results = preprocess(cfg, image)
        xs.append(x)
        metas.append(dict(img_shape=results['img_shape'], ori_shape=results['ori_shape'],
                          scale_factor=results['scale_factor'], pad_shape=x.shape[2:],
                          batch_input_shape=x.shape[2:]))
    return np.concatenate(xs), metas


@pytest.mark.slow
@pytest.mark.parametrize('dynamo', [False, True], ids=['torchscript', 'dynamo'])
@pytest.mark.parametrize('config', [MASK_RCNN, RETINANET], ids=['mask_rcnn', 'retinanet'])
def test_trained_detector_dynamic(tmp_path, shapes, config, dynamo):
    """The acceptance: a trained checkpoint exported by tools/deployment/pytorch2onnx.py with
    --dynamic (by either exporter) gives in onnxruntime the detections of model.predict on
    held-out images, at the config's size (batches of 2) and upscaled 1.5x (1 image), rescaled
    to the images' pixels."""
    import glob
    data_root, checkpoint = shapes
    ckpt = checkpoint(config)
    out = str(tmp_path / 'det.onnx')
    cmd = [sys.executable, _tool('pytorch2onnx.py'), config, '--checkpoint', ckpt, '--out', out,
           '--shape', '128', '160', '--dynamic'] + ['--dynamo'] * dynamo
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '0 unmatched' in proc.stdout
    cfg, _, model = build_export_model(config, ckpt)
    detector = load_onnx(out)
    score_thr = (cfg.model.test_cfg.rcnn if 'rcnn' in cfg.model.test_cfg
                 else cfg.model.test_cfg).score_thr
    images = sorted(glob.glob(osp.join(data_root, 'val', '*.jpg')))
    at_size = []  # the detections at the config's size, of all held-out images
    for scale, batches in (((160, 128), [images[i:i + 2] for i in range(0, len(images), 2)]),
                           ((240, 192), [images[:1]])):
        for batch in batches:
            x, metas = preprocessed_batch(cfg, batch, scale)
            ref = torch_detections(model, torch.from_numpy(x), metas)
            got = detector(x, metas)
            for r, g, m in zip(ref, got, metas):
                check_outputs(g, 3, m['ori_shape'], 'masks' in r)
                # detections within the score tolerance of the threshold may fall either side
                assert_same_detections(r, g, min_score=score_thr + SCORE_TOL)
            if scale == (160, 128):
                at_size += got
    # a trained detector: the deployed model finds most shapes with confident detections
    # (the untrained one none)
    recall = shape_recall(data_root, images, at_size)
    print(f'\n[{osp.basename(config)}] held-out shapes found with score >= 0.3: '
          f'{100 * recall:.0f} %')
    assert recall >= 0.5


@pytest.mark.slow
def test_trained_mask_rcnn_onnx_inference(tmp_path, shapes):
    """tools/deployment/onnx_inference.py on a held-out image prints and draws the trained
    Mask R-CNN's detections, those of model.predict on the same image."""
    import glob
    import importlib.util
    data_root, checkpoint = shapes
    ckpt = checkpoint(MASK_RCNN)
    cfg, task, model = build_export_model(MASK_RCNN, ckpt)
    out = str(tmp_path / 'det.onnx')
    export_model(cfg, task, model, torch.randn(1, 3, 128, 160), out, dynamic=True)
    image = sorted(glob.glob(osp.join(data_root, 'val', '*.jpg')))[3]
    spec = importlib.util.spec_from_file_location('onnx_inference', _tool('onnx_inference.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    drawn = str(tmp_path / 'drawn.png')
    got = tool.main([out, image, '--out', drawn, '--score-thr', '0.5'])
    x, metas = preprocessed_batch(cfg, [image], (160, 128))
    ref = torch_detections(model, torch.from_numpy(x), metas)[0]
    assert_same_detections(ref, got, min_score=0.05 + SCORE_TOL)
    assert got['masks'].shape[1:] == (128, 160) and osp.getsize(drawn) > 1000


@pytest.mark.slow
@pytest.mark.parametrize('dynamo', [False, True], ids=['torchscript', 'dynamo'])
def test_full_size_mask_rcnn_dat_t_exports(tmp_path, dynamo):
    """configs/detection/mask_rcnn_dat_t_1x.py itself (DAT-T, 256-wide FPN, 80 classes,
    random weights) exports with dynamic axes and equals model.predict at a small input."""
    config = osp.join(ROOT, 'configs/detection/mask_rcnn_dat_t_1x.py')
    overrides = {'model.backbone.init_cfg': None, 'model.test_cfg.rcnn.score_thr': 0.01}
    export_and_compare(tmp_path, config, overrides, (1, 3, 256, 320),
                       [((1, 3, 224, 288), None), ((2, 3, 256, 320), [(256, 320), (240, 300)])],
                       dynamo=dynamo)
