"""Running an exported model with onnxruntime (CPU): :class:`OnnxModel` runs one graph,
:class:`OnnxDetector` chains a detector's graphs and its post-processing
(:mod:`mmdat.deployment.postprocess`); :func:`load_onnx` picks the one a file needs."""
import json
import os.path as osp

import numpy as np

from . import postprocess as post

#: metadata keys written by :func:`mmdat.deployment.export.add_metadata`
TASK_KEY, CONFIG_KEY, GRAPHS_KEY = 'mmdat_task', 'mmdat_config', 'mmdat_graphs'


def read_metadata(path):
    """The ``mmdat_*`` metadata of an exported file (empty if it has none)."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key.startswith('mmdat_')}


class OnnxModel:
    """An onnxruntime session of one graph: ``model(images)`` -> dict of outputs, or
    ``model.run(feeds)`` for graphs with several inputs (feeds it does not take are left out)."""

    def __init__(self, path, threads=None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_name = self.input_names[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds):
        feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, feeds)))

    def __call__(self, images):
        return self.run({self.input_name: np.asarray(images, dtype=np.float32)})


def detection_metas(images, img_shapes=None):
    """mmdet image metas of a (B, 3, H, W) batch whose image ``i`` fills ``img_shapes[i]``
    (default: all of the input), not resized."""
    H, W = images.shape[2:]
    img_shapes = img_shapes or [(H, W)] * len(images)
    return [dict(img_shape=tuple(s), ori_shape=tuple(s), scale_factor=(1., 1.),
                 pad_shape=(H, W), batch_input_shape=(H, W)) for s in img_shapes]


def rois_of(boxes_per_image):
    """mmdet's ``bbox2roi``: (K, 5) float32 rois (image index, x1, y1, x2, y2)."""
    rois = [np.concatenate([np.full((len(b), 1), i, np.float32), b], axis=1)
            for i, b in enumerate(boxes_per_image)]
    return np.concatenate(rois).astype(np.float32) if rois else np.zeros((0, 5), np.float32)


def empty_results(num_images, with_mask, shapes):
    out = [dict(bboxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                labels=np.zeros(0, np.int64)) for _ in range(num_images)]
    if with_mask:
        for r, (h, w) in zip(out, shapes):
            r['masks'] = np.zeros((0, h, w), bool)
    return out


class OnnxDetector:
    """An exported detector (:func:`mmdat.deployment.export.export_detector`):
    ``detector(images, img_metas)`` -> per image a dict of ``bboxes``, ``scores``, ``labels``
    (and ``masks``), as the detector's ``predict`` gives them.

    ``images`` is the (B, 3, H, W) preprocessed batch; ``img_metas`` gives per image its
    ``img_shape`` (unpadded size in the batch), and for ``rescale=True`` its ``scale_factor``
    (w, h) and ``ori_shape`` (default: each image is the whole input, not resized)."""

    def __init__(self, path, threads=None):
        from mmengine.config import Config
        meta = read_metadata(path)
        if meta.get(TASK_KEY) != 'detection':
            raise ValueError(f'{path} is not an exported mmdat detector')
        self.cfg = Config.fromstring(meta[CONFIG_KEY], '.py')
        self.test_cfg = self.cfg.model.test_cfg
        graphs = json.loads(meta[GRAPHS_KEY])
        self.network = OnnxModel(path, threads)
        self.roi_bbox = self.roi_mask = None
        folder = osp.dirname(osp.abspath(path))
        if graphs.get('roi_bbox'):
            self.roi_bbox = OnnxModel(osp.join(folder, graphs['roi_bbox']), threads)
        if graphs.get('roi_mask'):
            self.roi_mask = OnnxModel(osp.join(folder, graphs['roi_mask']), threads)
        names = self.network.output_names
        self.num_levels = sum(n.startswith('scores_') for n in names)
        self.feat_names = [n for n in names if n.startswith('feat_')]

    def __call__(self, images, img_metas=None, rescale=True):
        images = np.asarray(images, dtype=np.float32)
        metas = img_metas or detection_metas(images)
        img_shapes = np.asarray([m['img_shape'][:2] for m in metas], np.float32)
        outs = self.network.run({'input': images, 'img_shapes': img_shapes})
        scores = [outs[f'scores_{level}'] for level in range(self.num_levels)]
        boxes = [outs[f'boxes_{level}'] for level in range(self.num_levels)]
        if self.roi_bbox is None:
            return [post.dense_detections(
                [s[i] for s in scores], [b[i] for b in boxes], self.test_cfg,
                metas[i].get('scale_factor') if rescale else None)
                for i in range(len(images))]
        feats = {name: outs[name] for name in self.feat_names}
        proposals = [post.rpn_proposals([s[i] for s in scores], [b[i] for b in boxes],
                                        self.test_cfg.rpn) for i in range(len(images))]
        return self.roi_detections(feats, proposals, img_shapes, metas, rescale)

    def roi_detections(self, feats, proposals, img_shapes, metas, rescale):
        """The RoI heads' detections (and masks) of each image's proposals."""
        cfg, with_mask = self.test_cfg.rcnn, self.roi_mask is not None
        rois = rois_of(proposals)
        if not len(rois):
            return empty_results(len(metas), with_mask, self.mask_sizes(metas, rescale))
        out = self.roi_bbox.run(dict(feats, rois=rois, img_shapes=img_shapes))
        image_of = rois[:, 0].astype(np.int64)
        # with masks, the box stage stays in the network frame (StandardRoIHead.predict)
        dets = [post.rcnn_detections(
            out['cls_scores'][image_of == i], out['boxes'][image_of == i], cfg,
            metas[i].get('scale_factor') if rescale and not with_mask else None)
            for i in range(len(metas))]
        if not with_mask:
            return dets
        det_rois = rois_of([d['bboxes'] for d in dets])
        if not len(det_rois):
            return empty_results(len(metas), True, self.mask_sizes(metas, rescale))
        probs = self.roi_mask.run(dict(feats, rois=det_rois))['mask_probs']
        image_of = det_rois[:, 0].astype(np.int64)
        return [post.mask_results(d, probs[image_of == i], cfg, m, rescale)
                for i, (d, m) in enumerate(zip(dets, metas))]

    @staticmethod
    def mask_sizes(metas, rescale):
        """The (h, w) of the pasted masks: the original images', or the resized ones'."""
        sizes = []
        for m in metas:
            h, w = m.get('ori_shape', m['img_shape'])[:2]
            sw, sh = (float(np.float32(s)) for s in m.get('scale_factor', (1., 1.)))
            sizes.append((h, w) if rescale else (int(np.round(h * sh)), int(np.round(w * sw))))
        return sizes


def load_onnx(path, threads=None):
    """:class:`OnnxDetector` for an exported detector, :class:`OnnxModel` otherwise."""
    if read_metadata(path).get(TASK_KEY) == 'detection':
        return OnnxDetector(path, threads)
    return OnnxModel(path, threads)
