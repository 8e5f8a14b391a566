"""Checking an exported detector against PyTorch: the detector's own ``predict`` as numpy
dicts, and the matching of two images' detections (same label, boxes and scores close)."""
import numpy as np

from .runtime import detection_metas  # noqa: F401  (the metas both sides are given)


def torch_detections(model, images, metas, rescale=True):
    """``model.predict`` of a (B, 3, H, W) tensor: per image a dict of numpy ``bboxes``,
    ``scores``, ``labels`` (and ``masks``)."""
    import torch
    from mmdet.structures import DetDataSample
    samples = [DetDataSample(metainfo=m) for m in metas]
    with torch.no_grad():
        preds = model.predict(images, samples, rescale=rescale)
    keys = ('bboxes', 'scores', 'labels', 'masks')
    return [{k: p.pred_instances.get(k).numpy() for k in keys if k in p.pred_instances}
            for p in preds]


def match_detections(ref, got, min_score=0.):
    """Pair two detections of one image (same label, nearest box; by decreasing reference
    score) and return: the detections scoring at least ``min_score`` that found no partner,
    in ``ref`` and in ``got`` (index arrays), and over the pairs where one of the two scores
    reaches ``min_score``: the largest box coordinate difference (px), the score difference
    and the share of mask pixels that differ."""
    pairs, free = [], list(range(len(got['scores'])))
    for i in np.argsort(-ref['scores'], kind='stable'):
        same = [j for j in free if got['labels'][j] == ref['labels'][i]]
        if same:
            j = min(same, key=lambda j: np.abs(got['bboxes'][j] - ref['bboxes'][i]).max())
            pairs.append((i, j))
            free.remove(j)
    paired = {i for i, _ in pairs}
    pairs = [(i, j) for i, j in pairs
             if max(ref['scores'][i], got['scores'][j]) >= min_score]
    stats = dict(
        unmatched_ref=np.asarray([i for i in range(len(ref['scores']))
                                  if i not in paired and ref['scores'][i] >= min_score],
                                 np.int64),
        unmatched_got=np.asarray([j for j in free if got['scores'][j] >= min_score], np.int64),
        box=np.asarray([np.abs(got['bboxes'][j] - ref['bboxes'][i]).max() for i, j in pairs]),
        score=np.asarray([abs(got['scores'][j] - ref['scores'][i]) for i, j in pairs]))
    if 'masks' in ref:
        stats['mask'] = np.asarray([(got['masks'][j] != ref['masks'][i]).mean()
                                    for i, j in pairs])
    return stats


def summarise(stats_list):
    """One line of the worst differences over several images' :func:`match_detections`."""
    def worst(key):
        values = np.concatenate([s[key] for s in stats_list if key in s] or [np.zeros(0)])
        return float(values.max()) if len(values) else 0.

    pairs = sum(len(s['box']) for s in stats_list)
    missing = sum(len(s['unmatched_ref']) + len(s['unmatched_got']) for s in stats_list)
    line = (f'{pairs} detections matched, {missing} unmatched; max box difference '
            f'{worst("box"):.2e} px, score {worst("score"):.2e}')
    if any('mask' in s for s in stats_list):
        line += f', mask pixels {100 * worst("mask"):.3f} %'
    return line
