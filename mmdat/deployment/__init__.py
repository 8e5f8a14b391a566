"""ONNX export of mmdat models (classification, segmentation) and onnxruntime
inference; the command-line tools are ``tools/deployment/pytorch2onnx.py`` and
``tools/deployment/onnx_inference.py``."""
from .export import (ExportError, build_export_model, export_onnx, export_module,
                     export_shape)
from .runtime import OnnxModel

__all__ = ['ExportError', 'build_export_model', 'export_onnx', 'export_module', 'export_shape',
           'OnnxModel']
