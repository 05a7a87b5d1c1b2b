"""The PyTorch worker plugin for interop-runtime (entry point ``torch``).

Importing this package does not import torch: the plugin does that in ``load``,
so a missing torch becomes an install hint rather than a failed entry point.
"""

from .plugin import TorchPlugin

__all__ = ["TorchPlugin"]
