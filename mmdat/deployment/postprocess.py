"""The data-dependent part of mmdet's detection post-processing in numpy, for the graphs of
:mod:`mmdat.deployment.detection`: per-level top-k, score thresholds, (batched) NMS,
``max_per_img``, rescaling to the original image and mask pasting, step for step as mmdet 3.x
and mmcv 2.x do them (``BaseDenseHead._predict_by_feat_single``,
``RPNHead._predict_by_feat_single``, ``BBoxHead._predict_by_feat_single`` and
``multiclass_nms``, mmcv's ``batched_nms`` and CPU ``nms``, ``FCNMaskHead`` and
``_do_paste_mask``), with the config's ``test_cfg``.

Per image, the results are a dict of ``bboxes`` (n, 4) float32, ``scores`` (n, ) float32,
``labels`` (n, ) int64 and, for Mask R-CNN, ``masks`` (n, h, w) bool.
"""
import numpy as np

#: the NMS of mmcv that is reproduced here
NMS_TYPES = ('nms', )


def nms(boxes, scores, iou_threshold):
    """mmcv's CPU ``nms`` (offset 0): indices of the kept boxes, by decreasing score. A box is
    dropped when its IoU with a kept, higher-scored one is above ``iou_threshold``."""
    order = np.argsort(-scores, kind='stable')
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        with np.errstate(invalid='ignore', divide='ignore'):
            overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(overlap > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes, scores, idxs, nms_cfg):
    """mmcv's ``batched_nms``: NMS within each group of ``idxs`` (class or level), by offsetting
    the groups' boxes apart (or one NMS per group from ``split_thr`` boxes on); the kept
    indices by decreasing score."""
    cfg = dict(nms_cfg)
    kind = cfg.pop('type', 'nms')
    if kind not in NMS_TYPES or cfg.get('offset', 0) != 0:
        raise ValueError(f'NMS {nms_cfg}: only mmcv nms with offset 0 is reproduced')
    iou, split_thr = cfg['iou_threshold'], cfg.get('split_thr', 10000)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if cfg.get('class_agnostic', False):
        shifted = boxes
    else:
        offsets = idxs.astype(boxes.dtype) * (boxes.max() + boxes.dtype.type(1))
        shifted = boxes + offsets[:, None]
    if len(boxes) < split_thr:
        return nms(shifted, scores, iou)
    keep = np.concatenate([np.flatnonzero(idxs == i)[nms(shifted[idxs == i], scores[idxs == i],
                                                         iou)] for i in np.unique(idxs)])
    keep = np.sort(keep)  # mmcv keeps them by index, then sorts by score
    return keep[np.argsort(-scores[keep], kind='stable')]


def rescale_boxes(boxes, scale_factor):
    """mmdet's ``scale_boxes`` by ``1 / scale_factor`` ((w, h) scale of the resize)."""
    sw, sh = scale_factor
    return boxes * np.asarray([1 / sw, 1 / sh] * 2, np.float32)


def box_size_mask(boxes, min_bbox_size):
    """Boxes wider and higher than ``min_bbox_size``."""
    return ((boxes[:, 2] - boxes[:, 0]) > min_bbox_size) & \
        ((boxes[:, 3] - boxes[:, 1]) > min_bbox_size)


def results(boxes, scores, labels, keep):
    return dict(bboxes=boxes[keep], scores=scores[keep], labels=labels[keep].astype(np.int64))


def nms_results(boxes, scores, labels, idxs, cfg):
    """The common tail of the dense heads: drop small boxes (``min_bbox_size``), NMS within the
    groups ``idxs``, keep ``max_per_img``."""
    if cfg.get('min_bbox_size', -1) >= 0:
        big = box_size_mask(boxes, cfg['min_bbox_size'])
        boxes, scores, labels, idxs = boxes[big], scores[big], labels[big], idxs[big]
    keep = batched_nms(boxes, scores, idxs, cfg['nms'])[:cfg['max_per_img']]
    return results(boxes, scores, labels, keep)


def filter_scores_and_topk(scores, score_thr, topk):
    """mmdet's ``filter_scores_and_topk`` of (N, C) scores: the (score, anchor, label) of the
    ``topk`` highest scores above ``score_thr``."""
    anchors, labels = np.nonzero(scores > score_thr)
    kept = scores[anchors, labels]
    # mmdet's slice, also for topk = -1 (which drops the last one there too)
    order = np.argsort(-kept, kind='stable')[:min(topk, len(kept))]
    return kept[order], anchors[order], labels[order]


def dense_detections(level_scores, level_boxes, cfg, scale_factor=None):
    """One image's detections of a dense head (RetinaNet), from per-level (N_l, C) scores and
    (N_l, 4) boxes; ``scale_factor`` rescales them to the original image."""
    scores, boxes, labels = [], [], []
    for s, b in zip(level_scores, level_boxes):
        s, anchors, lab = filter_scores_and_topk(s, cfg.get('score_thr', 0),
                                                 cfg.get('nms_pre', -1))
        scores.append(s)
        boxes.append(b[anchors])
        labels.append(lab)
    scores, boxes, labels = (np.concatenate(v) for v in (scores, boxes, labels))
    if scale_factor is not None:
        boxes = rescale_boxes(boxes, scale_factor)
    return nms_results(boxes, scores, labels, labels, cfg)


def rpn_proposals(level_scores, level_boxes, cfg):
    """One image's RPN proposals ((n, 4) boxes, by decreasing score) from per-level (N_l, 1)
    scores and (N_l, 4) boxes: the ``nms_pre`` best of each level, NMS within levels."""
    scores, boxes, levels = [], [], []
    nms_pre = cfg.get('nms_pre', -1)
    for level, (s, b) in enumerate(zip(level_scores, level_boxes)):
        s = s.reshape(-1)
        if 0 < nms_pre < len(s):
            top = np.argsort(-s, kind='stable')[:nms_pre]
            s, b = s[top], b[top]
        scores.append(s)
        boxes.append(b)
        levels.append(np.full(len(s), level, np.int64))
    scores, boxes, levels = (np.concatenate(v) for v in (scores, boxes, levels))
    return nms_results(boxes, scores, np.zeros_like(levels), levels, cfg)['bboxes']


def rcnn_detections(cls_scores, boxes, cfg, scale_factor=None):
    """One image's detections of a box head (mmdet's ``multiclass_nms``) from (K, C + 1) softmax
    scores and (K, 4 C) or class-agnostic (K, 4) boxes."""
    num_classes = cls_scores.shape[1] - 1
    if scale_factor is not None:
        boxes = rescale_boxes(boxes.reshape(-1, 4), scale_factor).reshape(boxes.shape)
    boxes = np.broadcast_to(boxes.reshape(len(boxes), -1, 4), (len(boxes), num_classes, 4))
    rois, labels = np.nonzero(cls_scores[:, :-1] > cfg['score_thr'])
    boxes, scores = boxes[rois, labels], cls_scores[rois, labels]
    keep = batched_nms(boxes, scores, labels, cfg['nms'])
    if cfg.get('max_per_img', 0) > 0:
        keep = keep[:cfg['max_per_img']]
    return results(boxes, scores, labels, keep)


def _paste_weights(lo, hi, start, stop, size):
    """(n, stop - start) x (n, size) bilinear weights of ``grid_sample`` (align_corners=False,
    zero padding) that map a size x size mask onto the pixels ``start..stop`` of an image
    axis, for boxes from ``lo`` to ``hi`` (n, )."""
    centres = np.arange(start, stop, dtype=np.float32) + np.float32(0.5)
    with np.errstate(divide='ignore', invalid='ignore'):
        grid = (centres[None] - lo[:, None]) / (hi - lo)[:, None] * 2 - 1
    grid[np.isinf(grid)] = 0
    src = ((grid + 1) * size - 1) / 2
    left = np.floor(src)
    frac = src - left
    weights = np.zeros(grid.shape + (size, ), np.float32)
    n, m = np.indices(grid.shape)
    for corner, w in ((left, 1 - frac), (left + 1, frac)):
        inside = (corner >= 0) & (corner < size)
        weights[n[inside], m[inside], corner[inside].astype(np.int64)] += w[inside]
    return weights


def paste_masks(probs, boxes, img_h, img_w, threshold):
    """mmdet's ``_do_paste_mask`` (CPU, ``skip_empty``) and binarisation: each (M, M) mask
    probability map resized into its box of an img_h x img_w image (bilinear, as
    ``grid_sample``), ``>= threshold``; pixels away from the box stay False."""
    masks = np.zeros((len(probs), img_h, img_w), bool)
    for i, (prob, box) in enumerate(zip(probs, boxes)):
        x0 = max(int(np.floor(box[0])) - 1, 0)
        y0 = max(int(np.floor(box[1])) - 1, 0)
        x1 = min(int(np.ceil(box[2])) + 1, img_w)
        y1 = min(int(np.ceil(box[3])) + 1, img_h)
        if x1 <= x0 or y1 <= y0:
            continue
        wy = _paste_weights(box[1:2], box[3:4], y0, y1, prob.shape[0])[0]
        wx = _paste_weights(box[0:1], box[2:3], x0, x1, prob.shape[1])[0]
        masks[i, y0:y1, x0:x1] = (wy @ prob @ wx.T) >= threshold
    return masks


def mask_results(dets, mask_probs, cfg, img_meta, rescale):
    """Add ``masks`` to one image's detections (boxes in the network input frame) from their
    (n, C, M, M) probabilities (FCNMaskHead's ``_predict_by_feat_single``): the map of each
    detection's class, pasted at the original size (``rescale``; the boxes are rescaled too)
    or at the network's resized size."""
    if cfg['mask_thr_binary'] < 0:
        raise ValueError('mask_thr_binary < 0 (uint8 soft masks) is not reproduced')
    probs = mask_probs[np.arange(len(dets['labels'])),
                       dets['labels'] if mask_probs.shape[1] > 1 else 0]
    sw, sh = (np.float32(s) for s in img_meta.get('scale_factor', (1., 1.)))
    img_h, img_w = img_meta.get('ori_shape', img_meta['img_shape'])[:2]
    boxes = dets['bboxes']
    if rescale:
        boxes = boxes / np.asarray([sw, sh, sw, sh], np.float32)
    else:
        img_h, img_w = int(np.round(img_h * float(sh))), int(np.round(img_w * float(sw)))
    return dict(dets, bboxes=boxes, masks=paste_masks(probs, boxes, img_h, img_w,
                                                       cfg['mask_thr_binary']))
