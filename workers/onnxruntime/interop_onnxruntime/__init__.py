"""The ONNX Runtime worker plugin for interop-runtime (entry point ``onnxruntime``).

Importing this package imports neither onnx nor onnxruntime; ``load`` does, so a
missing one becomes an install hint rather than a failed entry point.
"""

from .plugin import OnnxRuntimePlugin

__all__ = ["OnnxRuntimePlugin"]
