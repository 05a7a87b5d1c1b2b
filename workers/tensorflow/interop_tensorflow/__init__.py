"""TensorFlow / Keras worker plugin for interop-runtime.

Registered as the ``tensorflow`` entry point in ``interop_runtime.plugins``.
Importing this package does not import TensorFlow; the plugin does that in
``load`` so that a missing TensorFlow becomes an install hint. Test and example
model factories live in ``interop_tensorflow.models`` (which imports Keras).
"""

from .plugin import TensorFlowPlugin

__all__ = ["TensorFlowPlugin"]
