"""The deformed sampling points of DAT's deformable attention blocks, drawn over an image
(Figures 5-6 and Appendix C of the paper). Used by ``tools/visualize_deformable.py``.

The points are captured without touching the model code: a forward hook on each chosen
:class:`~mmdat.models.layers.DeformableAttention` keeps the block's input map, from which the
module's own :meth:`~mmdat.models.layers.DeformableAttention.deformed_points` (reference grid
plus ``s * tanh`` offsets) gives the points, and, for a query, the attention weights are
recomputed with the layer's public functions (:func:`deformed_keys_values`,
:func:`deformable_position_bias`), so no maths is duplicated here.

Coordinates: the module's points are normalised ``(y, x)`` in ``[-1, 1]`` over the stage's
feature map; the map of stride ``t`` covers ``t * H_f`` input pixels (DAT pads at the
bottom/right), so a point ``p`` lies at pixel ``(p + 1) / 2 * t * H_f`` of the network input,
which is the image as drawn (after the config's test pipeline, before padding).
"""
import os.path as osp
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from .complexity import build_model, load_config, task_of


@dataclass
class BlockPoints:
    """What one deformable block saw.

    Attributes:
        name (str): ``'S.B'``: stage ``S``, block ``B`` (0-based, as in ``backbone.stages``).
        stride (int): the stage's total stride in input pixels.
        points (ndarray): (G, Hk, Wk, 2) deformed sampling points, (y, x) input pixels.
        reference (ndarray): (G, Hk, Wk, 2) the reference grid points, (y, x) input pixels.
        query (tuple, optional): the (y, x) pixel of the query whose attention is shown.
        topk (list): ``(weight, group, key_index, y, x)`` of the query's top keys, the
            weight of a key being the sum of its group's heads' attention over all M heads.
    """
    name: str
    stride: int
    points: np.ndarray
    reference: np.ndarray
    query: tuple = None
    topk: list = field(default_factory=list)


def deformable_blocks(backbone):
    """``{'S.B': DeformableAttention}`` of a DAT backbone (any module with ``stages``)."""
    from mmdat.models.layers import DeformableAttention
    blocks = {}
    for name, module in backbone.named_modules():
        if isinstance(module, DeformableAttention):
            m = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.attn$', name)
            if m is None:
                raise ValueError(f'unexpected deformable attention module {name!r}')
            blocks[f'{m.group(1)}.{m.group(2)}'] = module
    if not blocks:
        raise ValueError(f'{type(backbone).__name__} has no DeformableAttention blocks')
    return blocks


def default_blocks(names):
    """The last deformable block of every deformable stage (as Figure 5 of the paper)."""
    last = {}
    for name in names:
        stage, block = map(int, name.split('.'))
        last[stage] = max(block, last.get(stage, -1))
    return [f'{s}.{b}' for s, b in sorted(last.items())]


def load_model(config, checkpoint=None, device='cpu', cfg_options=None):
    """Build a config's model (classifier, detector or segmentor) in eval mode and load a
    checkpoint into it. Returns ``(model, cfg)``."""
    from mmengine.runner import load_checkpoint
    cfg = load_config(config, cfg_options)
    task_of(cfg)  # a clear error for configs of other toolboxes
    model = build_model(cfg)
    if getattr(model, 'backbone', None) is None:
        raise ValueError(f'{type(model).__name__} has no backbone')
    if checkpoint is not None:
        load_checkpoint(model, str(checkpoint), map_location='cpu', logger='current')
    return model.to(device).eval(), cfg


def _test_pipeline(cfg):
    """The config's test pipeline, without annotation loading (there is none for an image)."""
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    pipeline = dataset.get('pipeline') or cfg.get('test_pipeline')
    if not pipeline:
        raise ValueError('the config has no test pipeline (test_pipeline or '
                         'test_dataloader.dataset.pipeline)')
    return [t for t in pipeline if 'LoadAnnotations' not in t['type']]


def prepare_image(model, cfg, image):
    """Run an image file through the config's test pipeline and the model's data
    preprocessor.

    Returns:
        tuple: ``inputs`` (1, 3, H, W) the backbone's input (normalised, maybe padded) and
        ``shown`` (h, w, 3) uint8 RGB, the image the network saw (after resizing/cropping,
        before padding), to draw on.
    """
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        data = Compose(_test_pipeline(cfg))(dict(img_path=str(image)))
    img = data['inputs']  # (C, h, w) uint8, BGR as loaded by LoadImageFromFile
    batch = model.data_preprocessor(
        dict(inputs=[img], data_samples=[data['data_samples']]), False)
    shown = img.permute(1, 2, 0).cpu().numpy()
    shown = shown[..., ::-1] if shown.shape[-1] == 3 else np.repeat(shown, 3, -1)
    return batch['inputs'], np.ascontiguousarray(shown)


def _to_pixels(points, stride, hw):
    """Normalised (y, x) on an (H_f, W_f) map of the given stride -> input pixels (y, x)."""
    size = points.new_tensor([hw[0] * stride, hw[1] * stride])
    return (points + 1) / 2 * size


@torch.no_grad()
def query_attention(attn, x, points, query_index):
    """The attention weights of one query of a deformable block, per head.

    Args:
        attn (DeformableAttention): the block's attention.
        x (Tensor): (1, C, H, W) the block's input map (after its LayerNorm).
        points (Tensor): (1, G, Hk, Wk, 2) its deformed points (normalised).
        query_index (int): the query's flat index in the H x W map.

    Returns:
        Tensor: (M, Hk*Wk) softmax weights; heads ``g*M/G ..`` attend to group g's points.
    """
    from mmdat.models.layers.deformable_attention import (deformable_position_bias,
                                                          deformed_keys_values, grid_points)
    B, C, H, W = x.shape
    G, Hk, Wk = points.shape[1:4]
    M = attn.num_heads
    d = C // M
    q = attn.proj_q(x).flatten(2)[..., query_index].reshape(M, d)
    k, _ = deformed_keys_values(x, points, attn.proj_k.weight.flatten(1), attn.proj_k.bias,
                                attn.proj_v.weight.flatten(1), attn.proj_v.bias)
    logits = torch.einsum('mc,mcn->mn', q, k.reshape(M, d, Hk * Wk)) * d**-0.5
    if attn.pos_encoding == 'relative':
        query_point = grid_points(H, W, x.device, x.dtype).reshape(H * W, 2)[query_index:][:1]
        logits = logits + deformable_position_bias(
            attn.rpe_table, query_point, points.reshape(1, G, Hk * Wk, 2))[0, :, 0]
    elif attn.pos_encoding == 'fixed':
        logits = logits + attn.fixed_bias(H, W, Hk, Wk)[0, :, query_index]
    return logits.softmax(-1)


@torch.no_grad()
def deformed_points(model, inputs, blocks=None, query=None, topk=0):
    """Run ``model.backbone`` on ``inputs`` and collect the chosen blocks' deformed points.

    Args:
        model (nn.Module): a model with a DAT ``backbone``.
        inputs (Tensor): (1, 3, H, W) backbone input.
        blocks (Sequence[str], optional): ``'S.B'`` names (see :func:`deformable_blocks`);
            default :func:`default_blocks`.
        query (tuple, optional): (y, x) input pixel of a query; with ``topk > 0``, the
            ``topk`` keys it attends to most are returned for every block.
        topk (int): how many keys.

    Returns:
        list[BlockPoints]: in the order of ``blocks``.
    """
    from mmdat.models.layers.deformable_attention import grid_points, token_map
    if inputs.shape[0] != 1:
        raise ValueError(f'one image at a time, got a batch of {inputs.shape[0]}')
    available = deformable_blocks(model.backbone)
    blocks = list(blocks) if blocks else default_blocks(available)
    unknown = [b for b in blocks if b not in available]
    if unknown:
        raise ValueError(f'no deformable block {unknown}; this backbone has '
                         f'{sorted(available, key=lambda n: tuple(map(int, n.split("."))))}')
    captured = {}

    def hook(name):

        def _hook(module, args, output):
            tokens, hw = args[0], tuple(args[1])
            x = token_map(tokens, hw)
            captured[name] = (x, module.deformed_points(module.proj_q(x)))

        return _hook

    handles = [available[b].register_forward_hook(hook(b)) for b in blocks]
    try:
        model.backbone(inputs)
    finally:
        for h in handles:
            h.remove()

    H_in = inputs.shape[2]
    results = []
    for name in blocks:
        attn = available[name]
        x, points = captured[name]
        hw = x.shape[2:]
        stride = 2**int(round(np.log2(H_in / hw[0])))
        Hk, Wk = points.shape[2:4]
        reference = grid_points(Hk, Wk, points.device, points.dtype).expand_as(points[0])
        res = BlockPoints(name=name, stride=stride,
                          points=_to_pixels(points[0], stride, hw).cpu().numpy(),
                          reference=_to_pixels(reference, stride, hw).cpu().numpy())
        if query is not None and topk > 0:
            qy = min(max(int(query[0] // stride), 0), hw[0] - 1)
            qx = min(max(int(query[1] // stride), 0), hw[1] - 1)
            weights = query_attention(attn, x, points, qy * hw[1] + qx)  # (M, Nk)
            G = points.shape[1]
            per_key = weights.reshape(G, -1, Hk * Wk).sum(1) / weights.shape[0]  # (G, Nk)
            values, flat = per_key.flatten().topk(min(topk, per_key.numel()))
            pix = res.points.reshape(G * Hk * Wk, 2)
            res.query = ((qy + 0.5) * stride, (qx + 0.5) * stride)
            res.topk = [(float(v), int(i) // (Hk * Wk), int(i) % (Hk * Wk), *map(float, pix[i]))
                        for v, i in zip(values, flat)]
        results.append(res)
    return results


def draw(shown, results, out, title=None, max_points=600):
    """Draw the points of each block over the image, one panel per block, into ``out``.

    Points are coloured by offset group; the reference grid is shown faintly. Points outside
    the image (offsets reach up to ``s/2`` key cells, beyond the map, where sampling reads
    zeros, or into the padding) are left out and counted in the panel's title. Dense maps are
    thinned to about ``max_points`` points per panel by drawing every k-th key row and column.
    With a query: a white star, and its top keys as circles sized by attention weight.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    h, w = shown.shape[:2]
    n = len(results)
    panel = 4.5
    fig, axes = plt.subplots(1, n, figsize=(panel * n, panel * h / w + 0.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        ax.imshow(shown, extent=(0, w, h, 0), interpolation='bilinear')
        G, Hk, Wk = res.points.shape[:3]
        step = max(1, int(np.ceil(np.sqrt(G * Hk * Wk / max_points))))
        colors = plt.get_cmap('tab10' if G <= 10 else 'hsv')(np.arange(G) % 10 / 10
                                                               if G <= 10 else np.arange(G) / G)
        ref = res.reference[0, ::step, ::step].reshape(-1, 2)
        ax.scatter(ref[:, 1], ref[:, 0], s=4, c='white', alpha=0.4, linewidths=0)
        size = float(np.clip(6000 / (G * ref.shape[0]), 6, 40))
        outside = 0
        for g in range(G):
            p = res.points[g, ::step, ::step].reshape(-1, 2)
            inside = (p[:, 0] >= 0) & (p[:, 0] <= h) & (p[:, 1] >= 0) & (p[:, 1] <= w)
            outside += int((~inside).sum())
            ax.scatter(p[inside, 1], p[inside, 0], s=size, color=colors[g], alpha=0.9,
                       linewidths=0.3, edgecolors='black')
        if res.query is not None:
            top = np.array([t[3:] for t in res.topk])
            weights = np.array([t[0] for t in res.topk])
            ax.scatter(top[:, 1], top[:, 0], s=40 + 400 * weights / weights.max(),
                       facecolors='none', edgecolors='yellow', linewidths=1.5)
            ax.scatter([res.query[1]], [res.query[0]], marker='*', s=250, c='white',
                       edgecolors='black', linewidths=1)
        stage, block = res.name.split('.')
        label = f'stage {int(stage) + 1}, block {block}: {G} groups x {Hk}x{Wk} keys'
        notes = []
        if step > 1:
            notes.append(f'1 in {step} key rows/columns drawn')
        if outside:
            notes.append(f'{outside} points off the image')
        if notes:
            label += '\n' + ', '.join(notes)
        ax.set_title(label, fontsize=9)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.axis('off')
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def visualize(config, checkpoint, image, out, blocks=None, query=None, topk=0, device='cpu',
              cfg_options=None, max_points=600):
    """Everything ``tools/visualize_deformable.py`` does: returns ``(out, results)``.

    ``query`` is (y, x) in pixels of the image as the network saw it (after the test
    pipeline); ``None`` with ``topk > 0`` takes its centre.
    """
    model, cfg = load_model(config, checkpoint, device, cfg_options)
    inputs, shown = prepare_image(model, cfg, image)
    if topk > 0 and query is None:
        query = (shown.shape[0] / 2, shown.shape[1] / 2)
    results = deformed_points(model, inputs.to(device), blocks, query, topk)
    draw(shown, results, out, title=osp.basename(image), max_points=max_points)
    return out, results


__all__ = ['BlockPoints', 'deformable_blocks', 'default_blocks', 'load_model', 'prepare_image',
           'query_attention', 'deformed_points', 'draw', 'visualize']
