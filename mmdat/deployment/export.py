"""Export of an mmdat model to ONNX, with the TorchScript-based exporter (``torch.jit`` tracing,
``dynamo=False``) or the dynamo one (``torch.export``, ``dynamo=True``).

The exported graph takes the normalised (B, 3, H, W) image tensor (the output of the config's
data preprocessor) and returns, per task (:data:`OUTPUT_NAMES`):

* classification: ``logits`` (B, num_classes), the classifier's ``mode='tensor'`` output;
* segmentation: ``seg_logits`` (B, num_classes, H, W), the decode head's logits resized to the
  input size as the segmentor's ``predict`` does (before the argmax);
* detection: the network's per-anchor scores and boxes (and a two-stage detector's RoI heads
  in further graphs), whose post-processing :class:`mmdat.deployment.runtime.OnnxDetector`
  runs (:mod:`mmdat.deployment.detection`, :mod:`mmdat.deployment.postprocess`).

With ``dynamic=True`` the batch, height and width are symbolic: DAT's window padding, shift
masks, key grids and neighbourhood windows are computed from the runtime shapes
(``mmdat.models.layers.deformable_attention.is_tracing``).
"""
import contextlib
import inspect
import os.path as osp
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdat.models.layers.deformable_attention import size_max
from mmdat.utils.complexity import build_model, load_config, task_of

from .errors import ExportError

#: names of the graph's inputs and outputs, per task
INPUT_NAME = 'input'
OUTPUT_NAMES = {
    'classification': ['logits'],
    'segmentation': ['seg_logits'],
}


def build_export_model(config, checkpoint=None, overrides=None):
    """(cfg, task, model): the config's model in eval mode on the CPU, with the checkpoint's
    weights if given (random weights otherwise)."""
    cfg = load_config(config, overrides)
    task = task_of(cfg)
    model = build_model(cfg)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    return cfg, task, model.eval()


def export_shape(cfg, task):
    """The default (H, W) of the example input: the test pipeline's resize scale, else 224."""
    if task == 'classification':
        return (224, 224)
    if task == 'segmentation':
        return (512, 512)
    return (800, 1216)


class ClassifierExport(nn.Module):
    """images -> logits, the classifier's ``mode='tensor'`` forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, mode='tensor')


class SegmentorExport(nn.Module):
    """images -> seg_logits at the input size (EncoderDecoder.encode_decode without metas)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        head = self.model.decode_head
        logits = head(self.model.extract_feat(x))
        return F.interpolate(logits, size=x.shape[2:], mode='bilinear',
                             align_corners=head.align_corners)


def check_exportable(model, task):
    """Raise :class:`ExportError` naming the first part of ``model`` that cannot be exported."""
    if task == 'segmentation':
        if type(model).__name__ != 'EncoderDecoder':
            raise ExportError(f'{type(model).__name__}: only EncoderDecoder segmentors can be '
                              'exported')
        if model.test_cfg.get('mode', 'whole') != 'whole':
            warnings.warn(f"segmentor test_cfg.mode={model.test_cfg.get('mode')!r}: the graph "
                          "computes the 'whole' image logits (no sliding window)")


def export_module(model, task):
    """The nn.Module that is exported for ``task`` (wrapping ``model``) and its output names."""
    check_exportable(model, task)
    if task == 'classification':
        return ClassifierExport(model), OUTPUT_NAMES[task]
    if task == 'segmentation':
        return SegmentorExport(model), OUTPUT_NAMES[task]
    if task == 'detection':
        raise ExportError(f'{type(model).__name__}: a detector exports as several graphs and '
                          'a post-processing step (export_model)')
    raise ExportError(f'unknown task {task!r}')


def export_model(cfg, task, model, example, out, dynamic=False, dynamo=False, opset=None,
                 verbose=False):
    """Export the model of any task at the ``example`` images to ``out`` (a detector's RoI
    heads beside it, :func:`mmdat.deployment.detection.export_detector`), with the metadata
    that :func:`mmdat.deployment.runtime.load_onnx` reads.

    Returns:
        list: the written files, ``out`` first.
    """
    graphs = None
    if task == 'detection':
        from .detection import export_detector
        graphs = export_detector(model, example, out, dynamic=dynamic, dynamo=dynamo,
                                 opset=opset, verbose=verbose)
    else:
        module, names = export_module(model, task)
        export_onnx(module, example, out, names, dynamic=dynamic, dynamo=dynamo, opset=opset,
                    verbose=verbose)
    add_metadata(out, cfg, task, graphs)
    folder = osp.dirname(out)
    return [out] + [osp.join(folder, f) for f in (graphs or {}).values()]


def _adaptive_pad_shape(self, input_shape):
    """mmcv's AdaptivePadding.get_pad_shape with integer arithmetic (no ``math.ceil`` of a
    float, which freezes traced sizes).

    The padding, ``ceil(h / s) * s - h + (k' - s)`` with the dilated kernel ``k'``, is
    clamped at 0 only where it can be negative (``k' < s``): for DAT's patch merging
    (``k' = s``) the conv's output size is then ``ceil(h / s)`` in a form that symbolic
    shapes (``torch.export``) simplify, where a ``max`` nests into every later size."""
    pads = []
    for size, k, s, d in zip(input_shape, self.kernel_size, self.stride, self.dilation):
        k = (k - 1) * d + 1
        pad = (size + s - 1) // s * s - size + (k - s)
        pads.append(pad if k >= s else size_max(pad, 0))
    return tuple(pads)


def _adaptive_pad_forward(self, x):
    """mmcv's AdaptivePadding.forward, padding always (by 0 where nothing is missing), so
    that the exported graph does not depend on whether the example input needed padding."""
    pad_h, pad_w = self.get_pad_shape(x.shape[-2:])
    if self.padding == 'corner':
        return F.pad(x, [0, pad_w, 0, pad_h])
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


def _seg_upsample_forward(self, x):
    """mmseg's Upsample.forward without ``int()`` of the traced sizes."""
    size, sf = self.size, self.scale_factor
    if not size:
        if float(sf).is_integer():
            size = [t * int(sf) for t in x.shape[-2:]]
        else:  # not traceable: frozen at the example size
            size = [int(t * sf) for t in x.shape[-2:]]
    return F.interpolate(x, size, None, self.mode, self.align_corners)


def adaptive_avg_pool2d(x, output_size):
    """``F.adaptive_avg_pool2d`` by its definition, bin ``i`` of an axis of length ``L`` split
    in ``s`` covering ``[floor(i L / s), ceil((i + 1) L / s))``, with bounds computed from the
    runtime size (ONNX has no adaptive pooling; the TorchScript exporter needs static sizes)."""
    sh, sw = (output_size, output_size) if isinstance(output_size, int) else output_size
    H, W = x.shape[-2:]
    sh, sw = sh or H, sw or W
    rows = []
    for i in range(sh):
        h0, h1 = (i * H) // sh, ((i + 1) * H + sh - 1) // sh
        cols = []
        for j in range(sw):
            w0, w1 = (j * W) // sw, ((j + 1) * W + sw - 1) // sw
            cols.append(x[..., h0:h1, w0:w1].mean(dim=(-2, -1), keepdim=True))
        rows.append(torch.cat(cols, dim=-1))
    return torch.cat(rows, dim=-2)


def _adaptive_avg_pool_forward(self, x):
    """nn.AdaptiveAvgPool2d.forward: a global mean for a 1x1 output, else
    :func:`adaptive_avg_pool2d` (UperNet's pyramid pooling)."""
    size = self.output_size
    if size in (1, (1, 1)):
        return x.mean(dim=(-2, -1), keepdim=True)
    return adaptive_avg_pool2d(x, size)


def _patch_targets():
    from mmcv.cnn.bricks.transformer import AdaptivePadding
    targets = [(AdaptivePadding, 'get_pad_shape', _adaptive_pad_shape),
               (AdaptivePadding, 'forward', _adaptive_pad_forward),
               (nn.AdaptiveAvgPool2d, 'forward', _adaptive_avg_pool_forward)]
    try:
        from mmseg.models.utils.wrappers import Upsample
        targets.append((Upsample, 'forward', _seg_upsample_forward))
    except ImportError:
        pass
    return targets


@contextlib.contextmanager
def export_patches():
    """Shape arithmetic of OpenMMLab modules (mmcv's AdaptivePadding, mmseg's Upsample) made
    traceable while exporting; the original methods are restored after."""
    saved = []
    for cls, name, fn in _patch_targets():
        saved.append((cls, name, cls.__dict__[name]))
        setattr(cls, name, fn)
    try:
        yield
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


@contextlib.contextmanager
def _module_stack(model):
    """Track which modules are running, so that an export error can name the innermost one."""
    stack, names = [], {m: n for n, m in model.named_modules()}
    handles = []

    def pre(module, args):
        stack.append(module)

    def post(module, args, out):
        if stack and stack[-1] is module:
            stack.pop()

    for m in names:
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        yield lambda: [(names[m], type(m).__name__) for m in stack]
    finally:
        for h in handles:
            h.remove()


def add_metadata(path, cfg, task, graphs=None):
    """Store the config (its text), the task and a detector's further graphs (by part, file
    names beside ``path``) in the ONNX file, for the preprocessing, the post-processing and
    :func:`mmdat.deployment.runtime.load_onnx`."""
    import json

    import onnx
    model = onnx.load(path)
    items = [('mmdat_task', task), ('mmdat_config', cfg.pretty_text)]
    if graphs is not None:
        items.append(('mmdat_graphs', json.dumps(graphs)))
    for key, value in items:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


def export_onnx(module, example, out, output_names, dynamic=False, dynamo=False, opset=None,
                verbose=False):
    """Export ``module`` (images -> outputs) at the ``example`` input to the ONNX file ``out``
    (:func:`export_graph`); ``dynamic``: any batch and input size.

    Raises:
        ExportError: naming the innermost module that was running when the exporter failed.
    """
    axes = None
    if dynamic:
        example = dynamo_example(example) if dynamo else example
        axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
        axes.update({name: {0: 'batch'} for name in output_names})
    return export_graph(module, {INPUT_NAME: example}, out, output_names, axes, dynamo=dynamo,
                        opset=opset, verbose=verbose)


def dynamo_example(example):
    """The example images for ``torch.export`` with dynamic shapes: a batch of at least two
    (it specialises an example size of 1 to a constant)."""
    return example if example.shape[0] > 1 else example.expand(2, -1, -1, -1).contiguous()


def dynamic_shapes(module, inputs, dynamic_axes):
    """``torch.export``'s ``dynamic_shapes`` for the named ``dynamic_axes`` of ``inputs``, the
    arguments of ``module.forward`` (in order, or all in its ``*args``).

    Every axis is ``Dim.DYNAMIC``: its range is inferred from the model (e.g. the smallest
    image its convolutions accept), and an axis that the model specialises to the example's
    size is an error instead of a silently static graph. Each axis named in ``dynamic_axes``
    must be larger than 1 in the example (sizes 0 and 1 are specialised)."""
    from torch.export import Dim
    shapes = []
    for name, tensor in inputs.items():
        axes = (dynamic_axes or {}).get(name, {})
        for axis, label in axes.items():
            if tensor.shape[axis] < 2:
                raise ExportError(
                    f'the dynamo exporter makes an axis of size {tensor.shape[axis]} static: '
                    f'give an example with {label} (axis {axis} of {name}) of at least 2')
        shapes.append({axis: Dim.DYNAMIC for axis in axes} or None)
    params = inspect.signature(module.forward).parameters.values()
    if [p.kind for p in params] == [inspect.Parameter.VAR_POSITIONAL]:
        return (tuple(shapes),)
    return tuple(shapes)


def check_dynamic_axes(path, dynamic_axes):
    """Raise :class:`ExportError` unless the dynamic axes of the graph's inputs are symbolic in
    the written file."""
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis, label in (dynamic_axes or {}).get(value.name, {}).items():
            if dims[axis].HasField('dim_value'):
                raise ExportError(
                    f'the exporter made {label} (axis {axis} of {value.name}) static '
                    f'({dims[axis].dim_value}): the model specialises it at the example size; '
                    'export at another example size (--shape, --batch)')


def export_graph(module, inputs, out, output_names, dynamic_axes=None, dynamo=False,
                 opset=None, verbose=False):
    """Export ``module`` at the example ``inputs`` (a dict: graph input name -> tensor, in the
    order of the forward's arguments) to the ONNX file ``out``, by the TorchScript exporter
    or the dynamo one, the ``dynamic_axes`` (input or output name -> {axis: label}) symbolic.

    Raises:
        ExportError: naming the innermost module that was running when the exporter failed.
    """
    module = module.eval()
    if opset is None:  # the dynamo exporter's lowest own opset is 18
        opset = 18 if dynamo else 17
    dirname = osp.dirname(osp.abspath(out))
    if not osp.isdir(dirname):
        raise ExportError(f'output folder {dirname} does not exist')
    kwargs = dict(input_names=list(inputs), output_names=list(output_names),
                  opset_version=opset, dynamo=dynamo)
    if dynamo:
        kwargs.update(external_data=False, optimize=True,
                      custom_translation_table=dynamo_translations())
        if dynamic_axes:
            kwargs['dynamic_shapes'] = dynamic_shapes(module, inputs, dynamic_axes)
    else:
        kwargs['do_constant_folding'] = True
        if dynamic_axes:
            kwargs['dynamic_axes'] = dynamic_axes
    with _module_stack(module) as running, export_patches(), warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter('ignore')
        try:
            with torch.no_grad():
                torch.onnx.export(module, tuple(inputs.values()), out, verbose=False, **kwargs)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001  (re-raised with the part that failed)
            parts = running()
            where = (' -> '.join(f'{n or "model"} ({t})' for n, t in parts[-3:])
                     if parts else 'the conversion of the traced graph to ONNX')
            exporter = 'dynamo (torch.export)' if dynamo else 'TorchScript'
            raise ExportError(f'the {exporter} ONNX exporter failed in {where}: '
                              f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}'
                              ) from e
    check_dynamic_axes(out, dynamic_axes)
    return out


def dynamo_translations():
    """The dynamo exporter's translations of mmdat's own ops (RoIAlign)."""
    from .detection import roi_align_translations
    return roi_align_translations()
