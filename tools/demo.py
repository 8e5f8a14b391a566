"""The mmdat demo (`make demo`): a DAT model learns on a fresh CPU machine, end to end,
through the standard OpenMMLab tools.

    python tools/demo.py [--task {cls,det,seg}] [--work-dir work_dirs/demo] [--quick]

1. generates a small dataset of coloured shapes (circle, square, triangle) on textured
   backgrounds in the toolbox's native format (``mmdat.datasets.synthetic``; deterministic
   from ``--seed``), with a train and a held-out split;
2. evaluates the untrained model on the held-out split with ``tools/test.py`` (the baseline);
3. trains DAT-nano (``arch='nano'`` of the arch zoo: a four-stage DAT with deformable
   stages 3-4, 32-256 channels, 2 blocks per stage, 2.3 M parameters) with ``tools/train.py``;
4. evaluates the trained checkpoint with ``tools/test.py`` (the toolbox's standard metric);
5. draws the deformed sampling points over a held-out image with
   ``tools/visualize_deformable.py``;

and prints the metric beside the baseline and chance, where the picture is, and where the
deformable blocks sample over the held-out images (:func:`points_on_shapes`). Tasks: ``det``
(default: mmdet Mask R-CNN on 160x128 images with up to three shapes, COCO bbox mAP, about 6
minutes on 2 cores), ``cls`` (mmpretrain, one shape per 64x64 image, top-1 accuracy) and
``seg`` (mmseg SemanticFPN, mIoU). Detection is the default because its pictures are the
telling ones: several shapes anywhere in the image, and feature maps large enough (8x10 keys
in stage 3) for the points to move onto them.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

#: task -> config, dataset generator and sizes (full run, --quick run), metric, chance level
TASKS = {
    'cls': dict(
        config='configs/demo/dat_nano_shapes_cls.py', make='make_classification',
        data=dict(num_train=4500, num_val=300, size=64), quick_data=dict(
            num_train=1200, num_val=150, size=64),
        epochs=10, quick_epochs=4, metric='accuracy/top1', chance=100 / 3,
        chance_text='33.3 % (3 balanced classes)', images='val/*/*.png'),
    'det': dict(
        config='configs/demo/dat_nano_shapes_det.py', make='make_detection',
        data=dict(num_train=200, num_val=40, size=(128, 160)), quick_data=dict(
            num_train=80, num_val=20, size=(128, 160)),
        epochs=12, quick_epochs=6, metric='coco/bbox_mAP', chance=0.0,
        chance_text='0.0 (random boxes)', images='val/*.jpg'),
    'seg': dict(
        config='configs/demo/dat_nano_shapes_seg.py', make='make_segmentation',
        data=dict(num_train=200, num_val=40, size=(128, 160)), quick_data=dict(
            num_train=16, num_val=8, size=(128, 160)),
        epochs=40, quick_epochs=2, metric='mIoU', chance=None,
        chance_text='below 25 (a constant prediction gets one class of 4)',
        images='images/validation/*.jpg'),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--task', choices=sorted(TASKS), default='det')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--epochs', type=int, help='training epochs (default per task)')
    parser.add_argument('--quick', action='store_true',
                        help='a smaller dataset and fewer epochs (the test suite uses it)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def run(cmd, log):
    """Run ``cmd`` showing its output live; return the output."""
    print('\n$ ' + ' '.join(cmd), flush=True)
    lines = []
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    out = ''.join(lines)
    with open(log, 'w') as f:
        f.write(out)
    if proc.returncode != 0:
        raise SystemExit(f'demo: {" ".join(cmd[1:3])} failed (exit {proc.returncode}); '
                         f'full output in {log}')
    return out


def read_metric(output, name, log):
    """The last ``name: value`` an evaluator printed."""
    found = re.findall(re.escape(name) + r':\s*([-\d.]+)', output)
    if not found:
        raise SystemExit(f'demo: no {name!r} in the output of tools/test.py ({log})')
    value = float(found[-1])
    return value * 100 if name.startswith('coco/') else value  # COCO mAP is in [0, 1]


def make_data(task, root, sizes, seed):
    """Generate the dataset once; regenerate when the sizes or seed change."""
    from mmdat.datasets import synthetic
    stamp = osp.join(root, 'dataset.json')
    spec = dict(task=task, seed=seed, version=3, **{k: list(v) if isinstance(v, tuple) else v
                                         for k, v in sizes.items()})
    if osp.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == spec:
                print(f'demo: dataset ready in {root}')
                return
        import shutil
        shutil.rmtree(root)
    print(f'demo: generating {sizes} into {root}', flush=True)
    getattr(synthetic, TASKS[task]['make'])(root, seed=seed, **sizes)
    with open(stamp, 'w') as f:
        json.dump(spec, f)


def save_untrained(config, path, overrides, seed):
    """The model as training starts (same seed, same init), saved as a checkpoint."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import mmdat  # noqa: F401
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.merge_from_dict(overrides)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict(note='untrained')), path)


def shape_mask(task, data_root, image):
    """The shapes of a generated held-out image, as a boolean (h, w) mask."""
    import numpy as np
    from PIL import Image
    stem = osp.splitext(osp.relpath(image, data_root))[0]
    if task == 'seg':  # ADE20K labels: 1 = background, 2.. = shapes
        path = osp.join(data_root, stem.replace('images', 'annotations', 1) + '.png')
        return np.asarray(Image.open(path)) >= 2
    # masks/val/<class>/<name>.png (cls), masks/val/<name>.png (det)
    return np.asarray(Image.open(osp.join(data_root, 'masks', stem + '.png'))) > 0


#: held-out images over which :func:`points_on_shapes` measures where the points land
POINT_IMAGES = 100


def points_on_shapes(task, config, checkpoint, data_root, overrides, num_images=POINT_IMAGES):
    """Where the deformable blocks sample, over held-out images. Per block, for its deformed
    points and for its reference grid points: the share that stays on the image (points off
    it sample zeros), the share of those that lands on a shape, and their mean distance (input
    pixels) to the nearest shape pixel."""
    import numpy as np
    from PIL import Image
    from scipy.ndimage import distance_transform_edt

    from mmdat.utils.visualize import deformed_points, load_model, prepare_image

    def where(points, mask, distance):  # (..., 2) (y, x) input pixels
        yx = np.floor(points.reshape(-1, 2)).astype(int)
        yx = yx[((yx >= 0) & (yx < mask.shape)).all(1)]
        if len(yx) == 0:  # every point left the image: no share or distance to average
            return 0.0, np.nan, np.nan
        return (len(yx) / points.reshape(-1, 2).shape[0], mask[yx[:, 0], yx[:, 1]].mean(),
                distance[yx[:, 0], yx[:, 1]].mean())

    model, cfg = load_model(osp.join(REPO, config), checkpoint, cfg_options=overrides)
    images = sorted(glob.glob(osp.join(data_root, TASKS[task]['images'])))[:num_images]
    found = {}
    for image in images:
        inputs, shown = prepare_image(model, cfg, image)
        mask = Image.fromarray(shape_mask(task, data_root, image))  # to the size shown
        mask = np.asarray(mask.resize(shown.shape[1::-1], Image.NEAREST))
        distance = distance_transform_edt(~mask)
        for block in deformed_points(model, inputs):
            found.setdefault(block.name, []).append(
                where(block.points, mask, distance) + where(block.reference, mask, distance))
    keys = ('on_image', 'on_shapes', 'distance')
    return {name: {kind: dict(zip(keys, np.nanmean(v, 0)[i:i + 3].round(3).tolist()))
                   for i, kind in ((0, 'deformed'), (3, 'reference'))}
            for name, v in found.items()}


def main(argv=None):
    args = parse_args(argv)
    task = TASKS[args.task]
    start = time.time()
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.join(work_dir, 'data', args.task)
    os.makedirs(work_dir, exist_ok=True)
    sizes = task['quick_data'] if args.quick else task['data']
    epochs = args.epochs or (task['quick_epochs'] if args.quick else task['epochs'])
    make_data(args.task, data_root, sizes, args.seed)

    overrides = {f'{split}_dataloader.dataset.data_root': data_root
                 for split in ('train', 'val', 'test')}
    if args.task == 'det':  # COCO's evaluator reads the held-out annotations itself
        overrides.update({f'{split}_evaluator.ann_file':
                          osp.join(data_root, 'annotations/instances_val.json')
                          for split in ('val', 'test')})
    overrides.update({'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
                      'default_hooks.checkpoint.interval': epochs,
                      'randomness.seed': args.seed})
    cfg_options = ['--cfg-options'] + [f'{k}={v}' for k, v in overrides.items()]
    py, config = sys.executable, task['config']
    run_dir = osp.join(work_dir, args.task)
    os.makedirs(run_dir, exist_ok=True)

    print('\ndemo: [1/4] the untrained model on the held-out split', flush=True)
    untrained = osp.join(run_dir, 'untrained.pth')
    save_untrained(config, untrained, overrides, args.seed)
    log = osp.join(run_dir, 'test_untrained.log')
    out = run([py, 'tools/test.py', config, untrained, '--work-dir',
               osp.join(run_dir, 'test_untrained')] + cfg_options, log)
    before = read_metric(out, task['metric'], log)

    print(f'\ndemo: [2/4] training DAT-nano for {epochs} epochs', flush=True)
    train_dir = osp.join(run_dir, 'train')
    run([py, 'tools/train.py', config, '--work-dir', train_dir] + cfg_options,
        osp.join(run_dir, 'train.log'))
    checkpoint = osp.join(train_dir, f'epoch_{epochs}.pth')

    print('\ndemo: [3/4] the trained model on the held-out split', flush=True)
    log = osp.join(run_dir, 'test.log')
    out = run([py, 'tools/test.py', config, checkpoint, '--work-dir',
               osp.join(run_dir, 'test')] + cfg_options, log)
    after = read_metric(out, task['metric'], log)

    print('\ndemo: [4/4] deformed sampling points over a held-out image', flush=True)
    image = sorted(glob.glob(osp.join(data_root, task['images'])))[0]
    picture = osp.join(run_dir, 'deformable_points.png')
    run([py, 'tools/visualize_deformable.py', config, checkpoint, image, '--out', picture],
        osp.join(run_dir, 'visualize.log'))

    focus = points_on_shapes(args.task, config, checkpoint, data_root, overrides)
    result = dict(task=args.task, metric=task['metric'], untrained=round(before, 2),
                  trained=round(after, 2), chance=task['chance_text'], epochs=epochs,
                  checkpoint=checkpoint, picture=picture, points_on_shapes=focus,
                  minutes=round((time.time() - start) / 60, 1))
    with open(osp.join(run_dir, 'result.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(f'\n=== mmdat demo ({args.task}) ===\n'
          f'held-out {task["metric"]}: {after:.2f} after {epochs} epochs '
          f'(untrained: {before:.2f}; chance: {task["chance_text"]})\n'
          f'deformed points: {picture}\n'
          f'checkpoint: {checkpoint}\n'
          f'time: {result["minutes"]} min')
    print(f'where the deformable blocks sample, over {min(POINT_IMAGES, sizes["num_val"])} '
          'held-out images (points on the image: share on the shapes, mean distance to a shape):')
    for name, (d, r) in ((n, (v['deformed'], v['reference'])) for n, v in focus.items()):
        print(f'  block {name}: deformed points {100 * d["on_shapes"]:.1f} %, '
              f'{d["distance"]:.1f} px ({100 * d["on_image"]:.0f} % on the image); '
              f'reference grid {100 * r["on_shapes"]:.1f} %, {r["distance"]:.1f} px')
    return result


if __name__ == '__main__':
    main()
