"""The exported graphs of mmdet detectors (RetinaNet-style dense heads, Mask R-CNN and Cascade
(Mask) R-CNN): the network, with the per-box arithmetic (anchors, box decoding, clipping,
activations) inside the graphs and the data-dependent selection (top-k, score threshold, NMS,
``max_per_img``, mask pasting) left to :mod:`mmdat.deployment.postprocess`.

A detector exports as one graph (dense heads) or three (two-stage detectors), which
:class:`mmdat.deployment.runtime.OnnxDetector` chains:

* ``network`` (:class:`DenseDetectorExport`, :class:`TwoStageNetworkExport`):
  ``input`` (B, 3, H, W) and ``img_shapes`` (B, 2), the (h, w) of each unpadded image, ->
  per pyramid level ``scores_<l>`` (B, N_l, C) and ``boxes_<l>`` (B, N_l, 4), the sigmoid scores
  and the decoded, clipped boxes of all N_l anchors, in mmdet's (y, x, anchor) order; a
  two-stage detector also returns the RoI extractor's feature maps ``feat_<i>``;
* ``roi_bbox`` (:class:`RoIBoxExport`): ``feat_<i>``, ``rois`` (K, 5), ``img_shapes`` ->
  ``cls_scores`` (K, C + 1) (softmax; of the mean of the stages' logits for a cascade) and
  ``boxes`` (K, 4 C) or class-agnostic (K, 4), decoded (from the rois as refined by the
  earlier stages of a cascade) and clipped;
* ``roi_mask`` (:class:`RoIMaskExport`): ``feat_<i>``, ``rois`` (K, 5) -> ``mask_probs``
  (K, C, M, M), the sigmoid of the mask logits (averaged over the stages of a cascade).
"""
import os.path as osp

import torch
import torch.nn as nn

from .errors import ExportError

IMG_SHAPES = 'img_shapes'
ROIS = 'rois'


def check_box_coder(coder, part):
    """Only mmdet's DeltaXYWHBBoxCoder is decoded in the graphs."""
    if type(coder).__name__ != 'DeltaXYWHBBoxCoder':
        raise ExportError(f'{part}: its box coder {type(coder).__name__} cannot be exported '
                          '(only DeltaXYWHBBoxCoder)')


def decode_boxes(coder, priors, deltas):
    """mmdet's ``delta2bbox`` of (N, 4) priors and (N, 4 k) deltas, without clipping (the
    coder's own ``decode`` switches to a batched variant while exporting)."""
    from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
    return delta2bbox(priors, deltas, coder.means, coder.stds, wh_ratio_clip=16 / 1000,
                      add_ctr_clamp=coder.add_ctr_clamp, ctr_clamp=coder.ctr_clamp)


def clip_boxes(coder, boxes, img_shapes):
    """Clip (..., 4 k) boxes to [0, w] x [0, h], ``img_shapes`` (..., 2) (h, w) broadcasting
    over the leading dimensions, as the coder does with ``max_shape`` (if ``clip_border``)."""
    if not coder.clip_border:
        return boxes
    shape = boxes.shape
    wh = img_shapes.flip(-1)
    bounds = torch.cat([wh, wh], dim=-1)
    boxes = boxes.reshape(*shape[:-1], -1, 4).clamp(min=0)
    return torch.minimum(boxes, bounds.unsqueeze(-2)).reshape(shape)


def level_predictions(head, cls_score, bbox_pred, level, img_shapes):
    """One pyramid level of a dense head, for the whole batch: the (B, N, C) activated scores
    and the (B, N, 4) decoded, clipped boxes of its N = H W A anchors (mmdet's order)."""
    B, _, H, W = cls_score.shape
    priors = head.prior_generator.single_level_grid_priors(
        (H, W), level, dtype=cls_score.dtype, device=cls_score.device)
    scores = cls_score.permute(0, 2, 3, 1).reshape(B, -1, head.cls_out_channels)
    scores = scores.sigmoid() if head.use_sigmoid_cls else scores.softmax(-1)[..., :-1]
    deltas = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4)
    boxes = decode_boxes(head.bbox_coder, priors.repeat(B, 1), deltas).reshape(B, -1, 4)
    return scores, clip_boxes(head.bbox_coder, boxes, img_shapes[:, None])


def dense_predictions(head, feats, img_shapes):
    """Per level, the scores and boxes of :func:`level_predictions` (a flat list)."""
    cls_scores, bbox_preds = head(feats)
    outs = []
    for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
        outs.extend(level_predictions(head, cls_score, bbox_pred, level, img_shapes))
    return outs


def check_dense_head(head, part):
    """The dense heads that export: anchor-based, one box per anchor, no score factors."""
    if not hasattr(head, 'prior_generator') or not hasattr(head, 'use_sigmoid_cls'):
        raise ExportError(f'{part} ({type(head).__name__}): only anchor-based dense heads '
                          '(RetinaNet, RPN) can be exported')
    check_box_coder(head.bbox_coder, part)


def dense_output_names(num_levels):
    return [f'{kind}_{level}' for level in range(num_levels) for kind in ('scores', 'boxes')]


class DenseDetectorExport(nn.Module):
    """A single-stage detector (RetinaNet): images, img_shapes -> scores_<l>, boxes_<l>."""

    def __init__(self, model):
        super().__init__()
        check_dense_head(model.bbox_head, 'bbox_head')
        self.model = model
        self.num_levels = len(model.bbox_head.prior_generator.strides)
        self.output_names = dense_output_names(self.num_levels)

    def forward(self, x, img_shapes):
        return tuple(dense_predictions(self.model.bbox_head, self.model.extract_feat(x),
                                       img_shapes))


@torch.library.custom_op('mmdat::roi_align', mutates_args=())
def _roi_align(feat: torch.Tensor, boxes: torch.Tensor, batch_inds: torch.Tensor,
               output_height: int, output_width: int, spatial_scale: float,
               sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """mmcv's RoIAlign (avg) of (K, 4) boxes in images ``batch_inds`` (K,), as an operator
    that both exporters translate to ONNX ``RoiAlign`` (:func:`_roi_align_onnx`)."""
    from mmcv.ops import roi_align
    rois = torch.cat([batch_inds[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(feat, rois, (output_height, output_width), spatial_scale, sampling_ratio,
                     'avg', aligned)


@_roi_align.register_fake
def _(feat, boxes, batch_inds, output_height, output_width, spatial_scale, sampling_ratio,
      aligned):
    return feat.new_empty(boxes.shape[0], feat.shape[1], output_height, output_width)


def _roi_align_onnx(op, feat, boxes, batch_inds, output_height, output_width, spatial_scale,
                    sampling_ratio, aligned):
    """ONNX RoiAlign (opset 16) of mmcv's: ``half_pixel`` for ``aligned=True``, adaptive
    sampling for ``sampling_ratio <= 0`` (mmcv's own symbolic writes the opset-10 form, which
    opset 16 shifts twice). ``op(name, *inputs, **attributes)`` writes the node."""
    return op('RoiAlign', feat, boxes, batch_inds, output_height=output_height,
              output_width=output_width, spatial_scale=spatial_scale,
              sampling_ratio=max(0, sampling_ratio), mode='avg',
              coordinate_transformation_mode='half_pixel' if aligned else 'output_half_pixel')


@torch.onnx.symbolic_helper.parse_args('v', 'v', 'v', 'i', 'i', 'f', 'i', 'b')
def _roi_align_torchscript(g, feat, boxes, batch_inds, output_height, output_width,
                           spatial_scale, sampling_ratio, aligned):
    def op(name, *inputs, **attributes):  # TorchScript's attribute names carry their type
        kinds = {int: 'i', float: 'f', str: 's'}
        return g.op(name, *inputs, **{f'{k}_{kinds[type(v)]}': v for k, v in attributes.items()})
    return _roi_align_onnx(op, feat, boxes, batch_inds, output_height, output_width,
                           spatial_scale, sampling_ratio, aligned)


torch.onnx.register_custom_op_symbolic('mmdat::roi_align', _roi_align_torchscript, 16)


def roi_align_translations():
    """The dynamo exporter's ``custom_translation_table`` entry of :func:`_roi_align`."""
    from onnxscript import opset18

    def translate(feat, boxes, batch_inds, output_height, output_width, spatial_scale,
                  sampling_ratio, aligned):
        return _roi_align_onnx(lambda name, *inputs, **attributes: getattr(opset18, name)(
            *inputs, **attributes), feat, boxes, batch_inds, output_height, output_width,
            spatial_scale, sampling_ratio, aligned)
    return {torch.ops.mmdat.roi_align.default: translate}


def roi_align(layer, feat, rois):
    """An mmcv ``RoIAlign`` layer on (K, 5) rois, exportable by both exporters."""
    if type(layer).__name__ != 'RoIAlign' or layer.pool_mode != 'avg':
        raise ExportError(f'RoI layer {type(layer).__name__}: only mmcv RoIAlign (avg) is '
                          'exported')
    return _roi_align(feat, rois[:, 1:], rois[:, 0].long(), *layer.output_size,
                      float(layer.spatial_scale), int(layer.sampling_ratio),
                      bool(layer.aligned))


def roi_features(extractor, feats, rois):
    """mmdet's SingleRoIExtractor without data-dependent indexing: every level's RoIAlign runs
    on all rois and each roi keeps the features of the level its scale maps to."""
    if type(extractor).__name__ != 'SingleRoIExtractor':
        raise ExportError(f'RoI extractor {type(extractor).__name__}: only '
                          'SingleRoIExtractor can be exported')
    num_levels = len(extractor.featmap_strides)
    if num_levels == 1:
        return roi_align(extractor.roi_layers[0], feats[0], rois)
    levels = extractor.map_roi_levels(rois, num_levels)
    out = 0
    for i, layer in enumerate(extractor.roi_layers):
        keep = (levels == i).to(feats[i].dtype)[:, None, None, None]
        out = out + roi_align(layer, feats[i], rois) * keep
    return out


def roi_stages(roi_head):
    """(bbox extractors, bbox heads, mask extractors, mask heads) of a StandardRoIHead (one
    stage) or a CascadeRoIHead (``num_stages``)."""
    def as_list(m):
        return list(m) if isinstance(m, nn.ModuleList) else [m]

    masks = ((as_list(roi_head.mask_roi_extractor), as_list(roi_head.mask_head))
             if roi_head.with_mask else ([], []))
    return (as_list(roi_head.bbox_roi_extractor), as_list(roi_head.bbox_head)) + masks


def check_roi_head(roi_head):
    name = type(roi_head).__name__
    if name not in ('StandardRoIHead', 'CascadeRoIHead'):
        raise ExportError(f'roi_head ({name}): only StandardRoIHead and CascadeRoIHead can be '
                          'exported')
    if getattr(roi_head, 'share_roi_extractor', False):
        raise ExportError(f'roi_head ({name}): a shared RoI extractor cannot be exported')
    bbox_extractors, bbox_heads, mask_extractors, mask_heads = roi_stages(roi_head)
    strides = {tuple(e.featmap_strides) for e in bbox_extractors + mask_extractors}
    if len(strides) > 1:
        raise ExportError(f'roi_head ({name}): its RoI extractors read different feature '
                          f'levels {sorted(strides)}; the graphs share one set')
    for i, head in enumerate(bbox_heads):
        check_box_coder(head.bbox_coder, f'roi_head.bbox_head[{i}]')
        if head.custom_cls_channels:
            raise ExportError(f'roi_head.bbox_head[{i}] ({type(head).__name__}): custom '
                              'classification activations cannot be exported')
    for i, head in enumerate(mask_heads):
        if type(head).__name__ != 'FCNMaskHead':
            raise ExportError(f'roi_head.mask_head[{i}] ({type(head).__name__}): only '
                              'FCNMaskHead can be exported')


class TwoStageNetworkExport(nn.Module):
    """A two-stage detector's first graph: images, img_shapes -> the RoI features ``feat_<i>``,
    then the RPN's ``scores_<l>`` (B, N_l, 1) and ``boxes_<l>``."""

    def __init__(self, model):
        super().__init__()
        check_dense_head(model.rpn_head, 'rpn_head')
        check_roi_head(model.roi_head)
        self.model = model
        self.num_feats = len(roi_stages(model.roi_head)[0][0].featmap_strides)
        self.output_names = ([f'feat_{i}' for i in range(self.num_feats)] +
                             dense_output_names(len(model.rpn_head.prior_generator.strides)))

    def forward(self, x, img_shapes):
        feats = self.model.extract_feat(x)
        return tuple(feats[:self.num_feats]) + tuple(
            dense_predictions(self.model.rpn_head, feats, img_shapes))


def bbox_forward(extractor, head, feats, rois):
    """One stage's box head on (K, 5) rois: its (K, C + 1) logits and (K, 4 k) deltas."""
    cls_score, bbox_pred = head(roi_features(extractor, feats, rois))
    return cls_score, bbox_pred


def refine_rois(head, rois, cls_score, bbox_pred, img_shapes):
    """mmdet's CascadeRoIHead refinement between stages (``regress_by_class`` of the argmax
    foreground class of the logits), for all rois of the batch at once."""
    deltas = bbox_pred
    if not head.reg_class_agnostic:
        label = cls_score[:, :-1].argmax(dim=1) * 4
        deltas = torch.gather(bbox_pred, 1, torch.stack([label + i for i in range(4)], 1))
    boxes = decode_boxes(head.bbox_coder, rois[:, 1:], deltas)
    boxes = clip_boxes(head.bbox_coder, boxes, img_shapes[rois[:, 0].long()])
    return torch.cat([rois[:, :1], boxes], dim=1)


class RoIBoxExport(nn.Module):
    """feat_<i>, rois, img_shapes -> cls_scores, boxes (see the module's docstring)."""

    output_names = ['cls_scores', 'boxes']

    def __init__(self, roi_head):
        super().__init__()
        self.extractors, self.heads, _, _ = [nn.ModuleList(m) for m in roi_stages(roi_head)]

    def forward(self, *inputs):
        *feats, rois, img_shapes = inputs
        logits = []
        for stage, (extractor, head) in enumerate(zip(self.extractors, self.heads)):
            cls_score, bbox_pred = bbox_forward(extractor, head, feats, rois)
            logits.append(cls_score)
            if stage < len(self.heads) - 1:
                rois = refine_rois(head, rois, cls_score, bbox_pred, img_shapes)
        head = self.heads[-1]
        scores = (sum(logits) / float(len(logits))).softmax(-1)
        k = 1 if head.reg_class_agnostic else head.num_classes
        boxes = decode_boxes(head.bbox_coder, rois[:, 1:].repeat_interleave(k, dim=0),
                             bbox_pred.reshape(-1, 4)).reshape(-1, 4 * k)
        boxes = clip_boxes(head.bbox_coder, boxes, img_shapes[rois[:, 0].long()])
        return scores, boxes


class RoIMaskExport(nn.Module):
    """feat_<i>, rois -> mask_probs (K, C, M, M): the mask heads' sigmoid, averaged over
    the stages of a cascade (its ``merge_aug_masks``)."""

    output_names = ['mask_probs']

    def __init__(self, roi_head):
        super().__init__()
        _, _, self.extractors, self.heads = [nn.ModuleList(m) for m in roi_stages(roi_head)]

    def forward(self, *inputs):
        *feats, rois = inputs
        probs = [head(roi_features(extractor, feats, rois)).sigmoid()
                 for extractor, head in zip(self.extractors, self.heads)]
        return sum(probs) / float(len(probs))


def network_export(model):
    """The first graph's module of an mmdet detector, or :class:`ExportError` naming why the
    detector cannot be exported."""
    name = type(model).__name__
    if getattr(model, 'with_rpn', False) and hasattr(model, 'roi_head'):
        return TwoStageNetworkExport(model)
    if hasattr(model, 'bbox_head') and not hasattr(model, 'roi_head'):
        return DenseDetectorExport(model)
    raise ExportError(f'{name}: only single-stage detectors with an anchor head (RetinaNet) '
                      'and two-stage detectors with an RPN (Mask R-CNN, Cascade R-CNN) can be '
                      'exported')


def example_rois(batch, height, width):
    """(K, 5) rois for tracing the RoI graphs: per image, centred boxes of sizes that map to
    each pyramid level (their values do not shape the graph)."""
    rois = []
    for i in range(batch):
        for size in (16, 48, 120, 300):
            w, h = min(size, width - 2), min(size, height - 2)
            x0, y0 = (width - w) / 2, (height - h) / 2
            rois.append([i, x0, y0, x0 + w, y0 + h])
    return torch.tensor(rois, dtype=torch.float32)


def _axes(names, axes_of, dynamic):
    return {n: axes_of(n) for n in names if axes_of(n)} if dynamic else {}


def _feature_axes(name):
    return {0: 'batch', 2: f'{name}_h', 3: f'{name}_w'} if name.startswith('feat_') else {}


def _network_axes(name):
    if name == 'input':
        return {0: 'batch', 2: 'height', 3: 'width'}
    if name == IMG_SHAPES:
        return {0: 'batch'}
    if name.startswith(('scores_', 'boxes_')):
        return {0: 'batch', 1: f'anchors_{name.split("_")[1]}'}
    return _feature_axes(name)


def roi_graph_path(out, part):
    """``model.onnx`` -> ``model.<part>.onnx``, beside it."""
    stem, ext = osp.splitext(out)
    return f'{stem}.{part}{ext or ".onnx"}'


def export_detector(model, example, out, dynamic=False, dynamo=False, opset=None,
                    verbose=False):
    """Export an mmdet detector at the ``example`` images: the network to ``out`` and, for a
    two-stage detector, its RoI heads beside it (:func:`roi_graph_path`). The rois' axis of
    the RoI graphs is always dynamic; ``dynamic`` makes the batch and image size dynamic.

    Returns:
        dict: the RoI graphs' file names (relative to ``out``'s folder), by part.
    """
    from .export import dynamo_example, export_graph
    network = network_export(model)
    if dynamo and dynamic:
        example = dynamo_example(example)
    B, _, H, W = example.shape
    img_shapes = torch.tensor([[H, W]] * B, dtype=torch.float32)
    two_stage = isinstance(network, TwoStageNetworkExport)
    inputs = {'input': example, IMG_SHAPES: img_shapes}
    names = network.output_names
    export_graph(network, inputs, out, names, _axes(list(inputs) + names, _network_axes, dynamic),
                 dynamo=dynamo, opset=opset, verbose=verbose)
    if not two_stage:
        return {}
    with torch.no_grad():
        feats = dict(zip(names, network(example, img_shapes)))
    feats = {n: v for n, v in feats.items() if n.startswith('feat_')}
    graphs = {'roi_bbox': RoIBoxExport(model.roi_head)}
    if model.roi_head.with_mask:
        graphs['roi_mask'] = RoIMaskExport(model.roi_head)
    files = {}
    for part, module in graphs.items():
        inputs = dict(feats, rois=example_rois(B, H, W))
        if part == 'roi_bbox':
            inputs[IMG_SHAPES] = img_shapes
        axes = _axes(list(inputs), lambda n: _network_axes(n) if n != ROIS else {}, dynamic)
        axes.update({n: {0: 'rois'} for n in [ROIS] + module.output_names})
        path = roi_graph_path(out, part)
        export_graph(module, inputs, path, module.output_names, axes, dynamo=dynamo,
                     opset=opset, verbose=verbose)
        files[part] = osp.basename(path)
    return files
