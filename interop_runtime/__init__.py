"""interop-runtime: models from different ML frameworks working together as one system.

The public surface: everything a client, a script or a worker plugin needs. Plugins in
workers/ import only from here; ``exportspec`` and ``trainspec`` are the contracts they
implement, ``ops`` the model operations.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are; at run time __getattr__ imports each on first use
    from interop_runtime.client import ClusterSpec, LocalCluster, WorkerSpec
    from interop_runtime.client.client import Client
    from interop_runtime.client.results import Params, RunResult
    from interop_runtime.graph.builder import Graph
    from interop_runtime.graph.signatures import spec
    from interop_runtime.ops.compat.modelgraph import ModelGraph, OpInfo, ParamInfo, TensorInfo
    from interop_runtime.ops.migration import exportspec as exportspec
    from interop_runtime.ops.training import spec as trainspec  # noqa: F401 - a module plugins use
    from interop_runtime.transport.buffers import aligned, is_aligned
    from interop_runtime.transport.memory import keep_freed_memory
    from interop_runtime.wire.codec import Envelope, decode, encode
    from interop_runtime.wire.dtypes import WIRE_DTYPES, to_numpy_dtype, wire_dtype
    from interop_runtime.wire.errors import (
        BadFrameError,
        BadHandleError,
        BadHeaderError,
        BadTensorError,
        BusyError,
        CoordinatorRestartedError,
        DTypeMismatchError,
        ErrorCode,
        FunctionFailedError,
        GraphError,
        InteropError,
        LayoutMismatchError,
        ProtocolError,
        RunCancelledError,
        RunError,
        RunTimeoutError,
        ShapeMismatchError,
        TooLargeError,
        UnauthorizedError,
        UnknownFunctionError,
        UnknownKindError,
        UnknownTargetError,
        UnsupportedError,
        VersionError,
        WorkerLostError,
    )
    from interop_runtime.wire.messages import PROTOCOL_VERSION, FunctionSpec, TensorSpec
    from interop_runtime.wire.payloads import GraphSpec
    from interop_runtime.worker.devices import Device, DeviceUnavailable, parse_device
    from interop_runtime.worker.plugin import PluginUnavailable, WorkerPlugin, import_callable

# module -> the names it gives: a daemon that imports `interop_runtime.worker` then pays
# only for what it uses, not for the client, asyncio and ops (bench/idle_bench.py)
_FROM: dict[str, tuple[str, ...]] = {
    "interop_runtime.client": ("ClusterSpec", "LocalCluster", "WorkerSpec"),
    "interop_runtime.client.client": ("Client",),
    "interop_runtime.client.results": ("Params", "RunResult"),
    "interop_runtime.graph.builder": ("Graph",),
    "interop_runtime.graph.signatures": ("spec",),
    "interop_runtime.ops.compat.modelgraph": ("ModelGraph", "OpInfo", "ParamInfo", "TensorInfo"),
    "interop_runtime.transport.buffers": ("aligned", "is_aligned"),
    "interop_runtime.transport.memory": ("keep_freed_memory",),
    "interop_runtime.wire.codec": ("Envelope", "decode", "encode"),
    "interop_runtime.wire.dtypes": ("WIRE_DTYPES", "to_numpy_dtype", "wire_dtype"),
    "interop_runtime.wire.errors": (
        "BadFrameError", "BadHandleError", "BadHeaderError", "BadTensorError", "BusyError",
        "CoordinatorRestartedError", "DTypeMismatchError", "ErrorCode", "FunctionFailedError",
        "GraphError", "InteropError", "LayoutMismatchError", "ProtocolError", "RunCancelledError",
        "RunError", "RunTimeoutError", "ShapeMismatchError", "TooLargeError", "UnauthorizedError",
        "UnknownFunctionError", "UnknownKindError", "UnknownTargetError", "UnsupportedError",
        "VersionError", "WorkerLostError",
    ),
    "interop_runtime.wire.messages": ("PROTOCOL_VERSION", "FunctionSpec", "TensorSpec"),
    "interop_runtime.wire.payloads": ("GraphSpec",),
    "interop_runtime.worker.devices": ("Device", "DeviceUnavailable", "parse_device"),
    "interop_runtime.worker.plugin": ("PluginUnavailable", "WorkerPlugin", "import_callable"),
}
_MODULES = {"exportspec": "interop_runtime.ops.migration.exportspec",
            "trainspec": "interop_runtime.ops.training.spec"}
_LAZY = {name: module for module, names in _FROM.items() for name in names}

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "WIRE_DTYPES",
    "BadFrameError",
    "BadHandleError",
    "BadHeaderError",
    "BadTensorError",
    "BusyError",
    "Client",
    "ClusterSpec",
    "CoordinatorRestartedError",
    "DTypeMismatchError",
    "Device",
    "DeviceUnavailable",
    "Envelope",
    "ErrorCode",
    "FunctionFailedError",
    "FunctionSpec",
    "Graph",
    "GraphError",
    "GraphSpec",
    "InteropError",
    "LayoutMismatchError",
    "LocalCluster",
    "ModelGraph",
    "OpInfo",
    "ParamInfo",
    "Params",
    "PluginUnavailable",
    "ProtocolError",
    "RunCancelledError",
    "RunError",
    "RunResult",
    "RunTimeoutError",
    "ShapeMismatchError",
    "TensorInfo",
    "TensorSpec",
    "TooLargeError",
    "UnauthorizedError",
    "UnknownFunctionError",
    "UnknownKindError",
    "UnknownTargetError",
    "UnsupportedError",
    "VersionError",
    "WorkerLostError",
    "WorkerPlugin",
    "WorkerSpec",
    "aligned",
    "decode",
    "encode",
    "import_callable",
    "is_aligned",
    "keep_freed_memory",
    "parse_device",
    "spec",
    "to_numpy_dtype",
    "wire_dtype",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'interop_runtime' has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_MODULES})
