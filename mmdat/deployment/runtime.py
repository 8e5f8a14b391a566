"""Running an exported model with onnxruntime (CPU)."""
import numpy as np


class OnnxModel:
    """An onnxruntime session of an exported file: ``model(images)`` -> dict of outputs."""

    def __init__(self, path, threads=None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images):
        images = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
        outs = self.session.run(None, {self.input_name: images})
        return dict(zip(self.output_names, outs))
