"""interop-runtime: models from different ML frameworks working together as one system.

The public surface: everything a client, a script or a worker plugin needs.
"""

from .buffers import aligned, is_aligned
from .client import Client, Params, RunResult
from .codec import Envelope, decode, encode
from .devices import Device, DeviceUnavailable, parse_device
from .dtypes import WIRE_DTYPES, to_numpy_dtype, wire_dtype
from .errors import (
    BadFrameError,
    BadHeaderError,
    BadTensorError,
    BusyError,
    CancelledError_,
    DTypeMismatchError,
    ErrorCode,
    FunctionFailedError,
    GraphError,
    InteropError,
    LayoutMismatchError,
    ProtocolError,
    RunError,
    ShapeMismatchError,
    TimeoutError_,
    TooLargeError,
    UnknownFunctionError,
    UnknownKindError,
    UnknownTargetError,
    UnsupportedError,
    VersionError,
    WorkerLostError,
)
from .graph import Graph, GraphSpec
from .launcher import ClusterSpec, LocalCluster, WorkerSpec
from .messages import PROTOCOL_VERSION, FunctionSpec, TensorSpec
from .modelgraph import ModelGraph, OpInfo, ParamInfo, TensorInfo
from .plugin import PluginUnavailable, WorkerPlugin, import_callable
from .signatures import spec

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "WIRE_DTYPES",
    "BadFrameError",
    "BadHeaderError",
    "BadTensorError",
    "BusyError",
    "CancelledError_",
    "Client",
    "ClusterSpec",
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
    "RunError",
    "RunResult",
    "ShapeMismatchError",
    "TensorInfo",
    "TensorSpec",
    "TimeoutError_",
    "TooLargeError",
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
    "parse_device",
    "spec",
    "to_numpy_dtype",
    "wire_dtype",
]
