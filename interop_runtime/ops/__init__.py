"""Model operations, built on the client's public API only: compatibility reports and the
neutral model graph (compat/), parameters across workers and frameworks (params/), output
fusion functions (fusion), training and distillation (training/), and migration through
ONNX with parity reports (migration/).

Imports: client, graph and wire. Never the coordinator, a worker host or the transport.
"""

from interop_runtime.ops.compat.live import compare_workers as compat
from interop_runtime.ops.params.mapping import copy_params

__all__ = ["compat", "copy_params"]
