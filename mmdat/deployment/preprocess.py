"""The config's test-time preprocessing in numpy (no PyTorch model needed): its test pipeline's
image transforms, then the data preprocessor's channel flip, normalisation and padding."""
import numpy as np

#: pipeline steps that need annotations or pack tensors: not run at inference
SKIP = ('LoadAnnotations', 'PackInputs', 'PackDetInputs', 'PackSegInputs')


def test_pipeline(cfg):
    """The image part of the config's test pipeline."""
    steps = cfg.get('test_pipeline') or cfg.test_dataloader.dataset.pipeline
    return [s for s in steps if s['type'].split('.')[-1] not in SKIP]


def preprocess(cfg, image):
    """(1, 3, H, W) float32 network input and the pipeline's results dict, for an image path
    (or an HxWx3 BGR uint8 array)."""
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    import mmdat  # noqa: F401
    import importlib
    scope = cfg.default_scope
    importlib.import_module(f'{scope}.datasets')  # registers the toolbox's transforms
    steps = test_pipeline(cfg)
    if isinstance(image, np.ndarray):
        steps = [s for s in steps if s['type'] != 'LoadImageFromFile']
        results = dict(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2])
    else:
        results = dict(img_path=image)
    with DefaultScope.overwrite_default_scope(scope):
        results = Compose(steps)(results)
    img = results['img'].astype(np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    dp = cfg.model.get('data_preprocessor', {})
    if dp.get('to_rgb') or dp.get('bgr_to_rgb'):
        img = img[..., ::-1]
    mean = np.asarray(dp.get('mean', [0., 0., 0.]), np.float32)
    std = np.asarray(dp.get('std', [1., 1., 1.]), np.float32)
    img = (img - mean) / std
    x = np.ascontiguousarray(img.transpose(2, 0, 1)[None])
    H, W = x.shape[2:]
    div = dp.get('size_divisor') or dp.get('pad_size_divisor')
    size = dp.get('size')
    ph, pw = H, W
    if size:
        ph, pw = max(H, size[0]), max(W, size[1])
    if div:
        ph, pw = -(-ph // div) * div, -(-pw // div) * div
    if (ph, pw) != (H, W):
        pad = np.zeros((1, 3, ph, pw), np.float32)
        if dp.get('pad_val', 0):
            pad[:] = dp.get('pad_val')
        pad[:, :, :H, :W] = x
        x = pad
    return x, results
