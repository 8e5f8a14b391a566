"""ONNX export (tools/deployment/pytorch2onnx.py, mmdat.deployment) and onnxruntime inference:
one exported file with dynamic axes, run at two batch sizes and two input sizes, against
PyTorch eager."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from mmdat.deployment import ExportError, OnnxModel, build_export_model  # noqa: E402
from mmdat.deployment import export_module, export_onnx  # noqa: E402
from mmdat.deployment.export import adaptive_avg_pool2d, export_patches  # noqa: E402
from mmdat.models.layers.window_attention import window_attention  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLS_DEMO = osp.join(ROOT, 'configs/demo/dat_nano_shapes_cls.py')
CLS_T = osp.join(ROOT, 'configs/classification/dat_t_in1k.py')
UPERNET_NANO = osp.join(ROOT, 'configs/deployment/upernet_dat_nano_export.py')
DAT_PP = {'model.backbone.arch': 'nano++', 'model.head.in_channels': 256}


def _export_and_compare(tmp_path, config, overrides, example, inputs, atol, dynamo=False):
    """Export with dynamic axes at ``example``; at each of the ``inputs`` shapes onnxruntime
    gives PyTorch's outputs within ``atol``."""
    torch.manual_seed(0)
    cfg, task, model = build_export_model(config, overrides=overrides)
    module, names = export_module(model, task)
    out = str(tmp_path / 'model.onnx')
    export_onnx(module, torch.randn(*example), out, names, dynamic=True, dynamo=dynamo)
    session = OnnxModel(out)
    for shape in inputs:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = module(x).numpy()
        got = session(x.numpy())[names[0]]
        assert got.shape == ref.shape, shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=atol, err_msg=str(shape))
    return model, module


# two batch sizes and two input sizes, the second not a multiple of the window (7) at any
# stage, with odd maps where DAT's 2x2 downsampling must pad
CLS_INPUTS = [(1, 3, 64, 64), (2, 3, 96, 64), (2, 3, 100, 76)]


@pytest.mark.parametrize('overrides', [None, DAT_PP], ids=['dat', 'dat++'])
def test_classifier_dynamic_torchscript(tmp_path, overrides):
    # 64x64: DAT++'s stage-3 neighbourhood attention pads its 4x4 map to 7x7, at 128x96 it runs
    # on an 8x6 map (padded rows only) in the same graph
    _export_and_compare(tmp_path, CLS_DEMO, overrides, (1, 3, 64, 64),
                        CLS_INPUTS + [(1, 3, 128, 96)], 1e-4)


def test_upernet_dynamic_torchscript(tmp_path):
    model, module = _export_and_compare(
        tmp_path, UPERNET_NANO, None, (1, 3, 128, 128),
        [(1, 3, 128, 128), (2, 3, 160, 96), (2, 3, 136, 168)], 1e-3)
    # the exported wrapper computes what the segmentor's own encode_decode does
    x = torch.randn(2, 3, 96, 128)
    metas = [dict(img_shape=(96, 128), pad_shape=(96, 128), ori_shape=(96, 128))] * 2
    with torch.no_grad():
        torch.testing.assert_close(module(x), model.encode_decode(x, metas))


class _WithShape(torch.nn.Module):

    def __init__(self, attn, width):
        super().__init__()
        self.attn, self.width = attn, width

    def forward(self, x):
        return self.attn(x, (x.shape[1] // self.width, self.width))


def test_export_paths_equal_eager():
    """The export-time code paths (window attention, AdaptivePadding, adaptive pooling) give the
    eager results."""
    torch.manual_seed(0)
    attn = window_attention(32, 2, 7, shifted=True).eval()
    x = torch.randn(2, 10 * 13, 32)
    with torch.no_grad():
        ref = attn(x, (10, 13))
        traced = torch.jit.trace(_WithShape(attn, 13), x, check_trace=False)
        torch.testing.assert_close(traced(x), ref)
        # the traced graph takes its shapes from the input
        x2 = torch.randn(1, 8 * 13, 32)
        torch.testing.assert_close(traced(x2), attn(x2, (8, 13)))
    z = torch.randn(2, 3, 11, 17)
    for size in [(1, 1), (2, 3), 6, (3, 6)]:
        torch.testing.assert_close(adaptive_avg_pool2d(z, size),
                                   torch.nn.functional.adaptive_avg_pool2d(z, size))
    from mmcv.cnn.bricks.transformer import AdaptivePadding
    pad = AdaptivePadding(kernel_size=2, stride=2, padding='corner')
    before = AdaptivePadding.forward
    with export_patches():
        for H, W in [(7, 8), (8, 8), (9, 5)]:
            y = pad(torch.randn(1, 2, H, W))
            assert y.shape[2:] == (H + H % 2, W + W % 2)
    assert AdaptivePadding.forward is before


def test_export_errors_name_the_part(tmp_path):
    # the tiled neighbourhood attention (eager DAT++'s) is a custom autograd.Function: forced
    # under export, the error names the attention module that failed
    from mmdat.models.layers.neighborhood_attention import NeighborhoodAttention
    _, task, model = build_export_model(CLS_DEMO, overrides=DAT_PP)
    for m in model.modules():
        if isinstance(m, NeighborhoodAttention):
            m.impl = 'tiled'
    module, names = export_module(model, task)
    with pytest.raises(ExportError, match=r'TorchScript ONNX exporter failed in .*'
                       r'backbone\.stages\.0\.blocks\.0\.attn \(NeighborhoodAttention\)'):
        export_onnx(module, torch.randn(1, 3, 64, 64), str(tmp_path / 'x.onnx'), names)
    det = osp.join(ROOT, 'configs/demo/dat_nano_shapes_det.py')
    _, task, model = build_export_model(det)
    with pytest.raises(ExportError, match='MaskRCNN: a detector exports as several graphs'):
        export_module(model, task)


def test_ddetr_stages_dynamic_torchscript(tmp_path):
    overrides = {'model.backbone.stage_types': ('swin', 'swin', 'ddetr', 'ddetr')}
    _export_and_compare(tmp_path, CLS_DEMO, overrides, (1, 3, 64, 64), CLS_INPUTS[:2], 1e-4)


@pytest.mark.parametrize('overrides', [None, pytest.param(DAT_PP, marks=pytest.mark.slow)],
                         ids=['dat', 'dat++'])
def test_classifier_dynamic_dynamo(tmp_path, overrides):
    """The dynamo exporter (torch.export) with a dynamic batch and size: one file for the
    sizes where DAT pads windows and odd maps, and DAT++'s neighbourhood attention pads maps
    smaller than its kernel (the example's) or not (the example is taken at batch 2, as
    torch.export would specialise a batch of 1)."""
    _export_and_compare(tmp_path, CLS_DEMO, overrides, (1, 3, 64, 64),
                        CLS_INPUTS + [(1, 3, 128, 96)], 1e-4, dynamo=True)


def test_dynamo_dynamic_axes_checked(tmp_path):
    """An axis of size 1 in the example cannot be dynamic in torch.export: a clear error."""
    from mmdat.deployment.export import dynamic_shapes
    _, task, model = build_export_model(CLS_DEMO)
    module, _ = export_module(model, task)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ExportError, match=r'batch \(axis 0 of input\) of at least 2'):
        dynamic_shapes(module, {'input': x}, {'input': {0: 'batch', 2: 'height'}})
    shapes = dynamic_shapes(module, {'input': x[:, :, :, :1].expand(2, -1, -1, -1)},
                            {'input': {0: 'batch', 2: 'height'}})
    assert list(shapes[0]) == [0, 2]


def _run_tool(script, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/deployment', script), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_tools_export_and_infer(tmp_path):
    import mmcv
    out = str(tmp_path / 'cls.onnx')
    stdout = _run_tool('pytorch2onnx.py', CLS_DEMO, '--out', out, '--shape', '64', '64',
                       '--dynamic')
    diff = float(stdout.split('max abs difference')[-1])
    assert diff < 1e-4
    img = str(tmp_path / 'img.png')
    mmcv.imwrite(np.random.RandomState(0).randint(0, 255, (80, 96, 3)).astype(np.uint8), img)
    stdout = _run_tool('onnx_inference.py', out, img, '--topk', '3')
    assert 'classification, input (1, 3, 80, 96)' in stdout
    assert len([line for line in stdout.splitlines() if line.startswith('  ')]) == 3
    # an unsupported part (a box coder other than DeltaXYWHBBoxCoder): a clear message naming the
    # part, no traceback
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/deployment/pytorch2onnx.py'),
         osp.join(ROOT, 'configs/demo/dat_nano_shapes_det.py'), '--out', out, '--shape', '64',
         '64', '--cfg-options', 'model.roi_head.bbox_head.bbox_coder.type=TBLRBBoxCoder'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and 'cannot export' in proc.stderr
    assert 'TBLRBBoxCoder' in proc.stderr and 'Traceback' not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize('dynamo', [False, True], ids=['torchscript', 'dynamo'])
@pytest.mark.parametrize('overrides', [None, {'model.backbone.arch': 'tiny++',
                                              'model.head.in_channels': 512}],
                         ids=['dat_t', 'dat_t++'])
def test_dat_t_classifier_dynamic(tmp_path, overrides, dynamo):
    _export_and_compare(tmp_path, CLS_T, overrides, (1, 3, 224, 224),
                        [(1, 3, 224, 224), (2, 3, 160, 192), (2, 3, 200, 232)], 1e-4,
                        dynamo=dynamo)


@pytest.mark.slow
def test_upernet_dynamic_dynamo(tmp_path):
    _export_and_compare(tmp_path, UPERNET_NANO, None, (1, 3, 128, 128),
                        [(1, 3, 128, 128), (2, 3, 160, 96), (2, 3, 136, 168)], 1e-3,
                        dynamo=True)
