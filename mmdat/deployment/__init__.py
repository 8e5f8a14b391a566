"""ONNX export of mmdat models (classification, segmentation, detection) and onnxruntime
inference; the command-line tools are ``tools/deployment/pytorch2onnx.py`` and
``tools/deployment/onnx_inference.py`` (README, "Deployment")."""
from .errors import ExportError
from .export import (build_export_model, export_model, export_module, export_onnx,
                     export_shape)
from .runtime import OnnxDetector, OnnxModel, load_onnx

__all__ = ['ExportError', 'build_export_model', 'export_model', 'export_onnx', 'export_module',
           'export_shape', 'OnnxModel', 'OnnxDetector', 'load_onnx']
