"""Small, deterministic datasets in the toolboxes' native formats, for tests and the demo.

Coloured geometric shapes (circle, square, triangle) on smooth random textures:

* :func:`make_classification` - an ImageNet-style folder ``{train,val}/<class>/*.png``
  (one shape per image; mmpretrain's ``CustomDataset`` reads it);
* :func:`make_detection` - COCO json with boxes and polygon instance masks
  (``{train,val}/*.jpg`` and ``annotations/instances_{train,val}.json``; mmdet's ``CocoDataset``);
* :func:`make_segmentation` - ADE20K layout ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` (label 1 = background, 2.. = shapes; 0 is
  "other", ignored with ``reduce_zero_label=True`` as in ADE20K).

Everything is a function of ``seed``: the same call writes the same files.
"""
import json
import math
import os
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle')


def _texture(rng, size):
    """A smooth random colour texture: low-frequency noise upsampled, plus fine grain."""
    h, w = size
    low = rng.uniform(0, 1, (4, 4, 3)).astype(np.float32)
    img = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize(
        (w, h), Image.BICUBIC), dtype=np.float32)
    img = 0.5 * img + 40 + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_polygon(kind, cx, cy, r, angle):
    if kind == 'circle':
        n = 32
    elif kind == 'square':
        n = 4
    else:
        n = 3
    return [(cx + r * math.cos(angle + 2 * math.pi * i / n),
             cy + r * math.sin(angle + 2 * math.pi * i / n)) for i in range(n)]


#: the upright pose of each shape: squares axis-aligned, triangles pointing up
_UPRIGHT = {'circle': 0., 'square': math.pi / 4, 'triangle': -math.pi / 2}


def _draw_scene(rng, size, num_shapes, min_r, max_r):
    """Draw upright shapes of random size, position and colour; return the image (H, W, 3),
    the label map and a list of instances."""
    h, w = size
    img = Image.fromarray(_texture(rng, size))
    draw = ImageDraw.Draw(img)
    labels = Image.new('L', (w, h), 0)
    ldraw = ImageDraw.Draw(labels)
    instances = []
    for _ in range(num_shapes):
        cls = int(rng.integers(len(CLASSES)))
        r = float(rng.uniform(min_r, max_r))
        cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        poly = _shape_polygon(CLASSES[cls], cx, cy, r, _UPRIGHT[CLASSES[cls]])
        # a random bright colour: the class is in the shape, not the colour
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        colour = tuple(min(255, c + 110) if i == int(rng.integers(3)) else c // 2
                       for i, c in enumerate(colour))
        draw.polygon(poly, fill=colour)
        ldraw.polygon(poly, fill=cls + 1)
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0 = max(0., min(xs)), max(0., min(ys))
        x1, y1 = min(float(w), max(xs)), min(float(h), max(ys))
        instances.append(dict(cls=cls, poly=poly, bbox=[x0, y0, x1 - x0, y1 - y0]))
    return np.asarray(img), np.asarray(labels), instances


def _splits(num_train, num_val):
    return (('train', num_train), ('val', num_val))


def make_classification(root, num_train=60, num_val=30, size=64, seed=0):
    """ImageNet-style folders ``root/{train,val}/<class>/*.png``; returns ``root``.

    The shape's mask is written beside, as ``root/masks/<split>/<class>/<name>.png`` (255 on
    the shape), outside the folders the classification dataset reads.
    """
    rng = np.random.default_rng(seed)
    for split, n in _splits(num_train, num_val):
        for i in range(n):
            img, label, inst = _draw_scene(rng, (size, size), 1, size * 0.22, size * 0.4)
            name = osp.join(CLASSES[inst[0]['cls']], f'{split}_{i:05d}.png')
            for folder, array in ((osp.join(root, split), img),
                                  (osp.join(root, 'masks', split), (label > 0) * 255)):
                os.makedirs(osp.join(folder, osp.dirname(name)), exist_ok=True)
                Image.fromarray(array.astype(np.uint8)).save(osp.join(folder, name))
    return root


def make_detection(root, num_train=8, num_val=4, size=(96, 128), seed=0, max_shapes=3):
    """COCO-format detection/instance-segmentation data; returns ``root``.

    The union of the shapes is written beside, as ``root/masks/<split>/<name>.png`` (255 on
    the shapes).
    """
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)]
    for split, n in _splits(num_train, num_val):
        os.makedirs(osp.join(root, split), exist_ok=True)
        os.makedirs(osp.join(root, 'masks', split), exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            k = int(rng.integers(1, max_shapes + 1))
            img, label, insts = _draw_scene(rng, size, k, min(size) * 0.12, min(size) * 0.3)
            name = f'{split}_{i:05d}.jpg'
            Image.fromarray(img).save(osp.join(root, split, name), quality=95)
            Image.fromarray(((label > 0) * 255).astype(np.uint8)).save(
                osp.join(root, 'masks', split, name[:-4] + '.png'))
            images.append(dict(id=i + 1, file_name=name, height=size[0], width=size[1]))
            for inst in insts:
                x, y, w, h = inst['bbox']
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=i + 1, category_id=inst['cls'] + 1,
                    bbox=[round(v, 2) for v in (x, y, w, h)], area=round(w * h, 2), iscrowd=0,
                    segmentation=[[round(v, 2) for p in inst['poly'] for v in p]]))
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return root


def make_segmentation(root, num_train=8, num_val=4, size=(96, 128), seed=0, max_shapes=3):
    """ADE20K-layout semantic segmentation data; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (('training', num_train), ('validation', num_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i in range(n):
            k = int(rng.integers(1, max_shapes + 1))
            img, labels, _ = _draw_scene(rng, size, k, min(size) * 0.12, min(size) * 0.3)
            name = f'ADE_{split}_{i:08d}'
            Image.fromarray(img).save(osp.join(root, 'images', split, name + '.jpg'), quality=95)
            # 1 = background, 2.. = shapes; 0 ("other") is ignored with reduce_zero_label
            Image.fromarray((labels + 1).astype(np.uint8)).save(
                osp.join(root, 'annotations', split, name + '.png'))
    return root


#: the segmentation classes after ``reduce_zero_label``
SEG_CLASSES = ('background', ) + CLASSES
