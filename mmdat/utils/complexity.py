"""Parameters and FLOPs of any mmpretrain / mmdet / mmseg config, counted as the toolboxes do.

FLOPs are multiply-accumulates (the convention of the Swin/PVT/DAT papers), counted by
:func:`mmengine.analysis.get_model_complexity_info` over the model's tensor-mode forward:

* classification (``default_scope='mmpretrain'``): the whole classifier
  (``model(inputs, mode='tensor')``: backbone, neck and head) at the size of the test images
  (224, 384; the model's ``backbone.img_size`` when the test pipeline does not fix it), as
  Table 2 of the paper;
* detection (``'mmdet'``): as mmdet's ``tools/analysis_tools/get_flops.py``: the image goes
  through the data preprocessor, then ``model(inputs, data_samples)`` in tensor mode
  (backbone, neck, RPN and RoI heads on the RPN's 1000 proposals, mask heads on the first 100),
  at 1280x800 (input ``(1, 3, 800, 1280)``), as Tables 3-4. mmdet 3.3's
  ``CascadeRoIHead.forward`` alone runs its three mask heads on all 1000 proposals, unlike
  its ``StandardRoIHead`` and mmdet 2's ``forward_dummy`` (100), with which Swin and DAT
  counted; cascade heads are counted with 100 mask RoIs here too (:func:`cascade_roi_forward`);
* segmentation (``'mmseg'``): as mmseg's ``get_flops.py``: encoder and decode head (the
  auxiliary head removed), at 512x2048, as Table 5.

Parameters are those of the whole model as built from the config (for segmentors, with the
auxiliary head, which the paper's and the Swin/mmseg model zoos' parameter counts include).
"""
import importlib
import os.path as osp
from functools import partial

import torch
from mmengine.config import Config

#: default_scope -> task
TASKS = {'mmpretrain': 'classification', 'mmdet': 'detection', 'mmseg': 'segmentation'}
#: the paper's input (H, W) per task (classification: the model's img_size)
PAPER_SHAPES = {'detection': (800, 1280), 'segmentation': (512, 2048)}


def config_path(config):
    """The file of a config given as a path or as ``'pkg::rel/path.py'`` (a config shipped
    with an installed toolbox, e.g. ``'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'``)."""
    if '::' not in config:
        return config
    package, rel = config.split('::', 1)
    root = osp.dirname(importlib.import_module(package).__file__)
    return osp.join(root, '.mim', 'configs', rel)


def load_config(config, overrides=None):
    """A :class:`Config` from a path or ``'pkg::path'``, with ``overrides`` merged in
    (``merge_from_dict`` semantics: dotted keys, ``_delete_=True`` replaces a dict)."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config_path(config))
    if overrides:
        cfg.merge_from_dict(overrides)
    return cfg


def task_of(cfg):
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f'default_scope is {scope!r}; expected one of {sorted(TASKS)}')
    return TASKS[scope]


def _hw(size):
    """(H, W) of an int or of a (W, H) pair, mmcv's convention for sizes of transforms."""
    return (size, size) if isinstance(size, int) else (size[1], size[0])


def test_image_size(cfg):
    """The (H, W) of the images a classifier's test pipeline feeds it: its last fixed-size
    ``Resize`` or ``CenterCrop`` (None when it has neither, or a shorter-side resize follows).
    The DAT++ 384 model is built at 224 and fed 384x384 images, for instance."""
    try:
        pipeline = cfg.test_dataloader.dataset.pipeline
    except (AttributeError, KeyError, TypeError):
        return None
    size = None
    for transform in pipeline:
        kind = transform.get('type')
        if kind == 'CenterCrop':
            size = _hw(transform['crop_size'])
        elif kind == 'Resize' and transform.get('scale') is not None:
            size = _hw(transform['scale'])
        elif kind in ('ResizeEdge', 'RandomResize'):
            size = None
    return size


def paper_shape(cfg):
    """The (H, W) at which the paper counts FLOPs for this config's task: for a classifier the
    size its test pipeline feeds it, else its pretraining size (``backbone.img_size``)."""
    task = task_of(cfg)
    if task == 'classification':
        size = test_image_size(cfg)
        if size is not None:
            return size
        size = cfg.model.get('backbone', {}).get('img_size', 224)
        return (size, size) if isinstance(size, int) else tuple(size)
    return PAPER_SHAPES[task]


def build_model(cfg):
    """Build ``cfg.model`` in eval mode with the toolbox's registry, on the CPU, without
    loading any pretrained weights (``init_weights`` is not called)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope
    import mmdat  # noqa: F401  (registers DAT)
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):  # no scope leaks to the caller
        model = registry.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


def _model_inputs(model, task, shape):
    """The model and the positional inputs of the toolbox's FLOP-counting forward."""
    H, W = shape
    if task == 'classification':
        return partial(model, mode='tensor'), (torch.rand(1, 3, H, W), )
    img = torch.randint(0, 256, (3, H, W), dtype=torch.uint8)
    meta = dict(ori_shape=(H, W), img_shape=(H, W), pad_shape=(H, W), scale_factor=(1., 1.))
    if task == 'detection':
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=meta)
        _use_paper_mask_rois(model)
    else:
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=meta)
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[sample]), False)
    return partial(model, data_samples=data['data_samples'], mode='tensor'), (data['inputs'], )


#: RoIs the mask heads see in the counting forward (mmdet's StandardRoIHead.forward)
MASK_ROIS = 100


def cascade_roi_forward(head, x, rpn_results_list, batch_data_samples):
    """``CascadeRoIHead.forward`` (tensor mode) with the mask heads on the first
    :data:`MASK_ROIS` refined RoIs, as ``StandardRoIHead.forward``."""
    from mmdet.structures.bbox import bbox2roi
    img_metas = [s.metainfo for s in batch_data_samples]
    proposals = [r.bboxes for r in rpn_results_list]
    rois = bbox2roi(proposals)
    results = ()
    if head.with_bbox:
        rois, cls_scores, bbox_preds = head._refine_roi(
            x, rois, img_metas, tuple(len(p) for p in proposals))
        results = results + (cls_scores, bbox_preds)
        rois = torch.cat(rois)
    if head.with_mask:
        mask_rois = rois[:MASK_ROIS]
        results = results + tuple(head._mask_forward(stage, x, mask_rois)['mask_preds']
                                  for stage in range(head.num_stages))
    return results


def _use_paper_mask_rois(model):
    from mmdet.models.roi_heads import CascadeRoIHead
    head = getattr(model, 'roi_head', None)
    if isinstance(head, CascadeRoIHead) and type(head).forward is CascadeRoIHead.forward:
        head.forward = partial(cascade_roi_forward, head)


class _Forward(torch.nn.Module):
    """Exposes a bound forward (with fixed keyword arguments) to the jit-based counter."""

    def __init__(self, model, forward):
        super().__init__()
        self.model = model
        self._fn = forward

    def forward(self, *inputs):
        return self._fn(*inputs)


def model_complexity(config, shape=None, overrides=None, seed=0):
    """Params and FLOPs of a config's model.

    Args:
        config (str | Config): a config path, ``'mmdet::swin/...py'`` or a Config.
        shape (tuple[int], optional): input (H, W); the paper's for the task when None.
        overrides (dict, optional): merged into the config first (see :func:`load_config`).
        seed (int): seeds the weights and the input (the RPN's proposals, hence the RoI
            heads' FLOPs, depend on them), so counts are reproducible.

    Returns:
        dict: ``task``, ``shape`` (H, W), ``params`` (count), ``flops`` (multiply-adds) and
        ``unsupported`` (ops the counter skipped, with counts).
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count
    cfg = load_config(config, overrides)
    task = task_of(cfg)
    shape = tuple(shape) if shape else paper_shape(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(cfg)
        params = parameter_count(model)['']
        if task == 'segmentation' and getattr(model, 'auxiliary_head', None) is not None:
            model.auxiliary_head = None  # as mmseg's get_flops: encoder + decoder
        forward, inputs = _model_inputs(model, task, shape)
        with torch.no_grad():
            analyzer = FlopAnalyzer(_Forward(model, forward), inputs)
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            flops = analyzer.total()
    return dict(task=task, shape=shape, params=params, flops=flops,
                unsupported=dict(analyzer.unsupported_ops()))
