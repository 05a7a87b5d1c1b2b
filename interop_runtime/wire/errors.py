"""Every error interop-runtime raises or sends, one class per wire error code.

The wire carries a closed list of codes (``ErrorCode``); each maps to exactly one
exception class, so a client re-raises the same class a worker would have raised.

    InteropError                      base; .code, .message, .field, .node, .edge
    ├── ProtocolError                 the bytes or header could not be accepted
    │   ├── BadFrameError             BAD_FRAME: not msgpack, missing/extra frames
    │   ├── BadHeaderError            BAD_HEADER: header failed schema validation
    │   ├── VersionError              VERSION: unsupported protocol version
    │   ├── UnknownKindError          UNKNOWN_KIND: kind not in the closed list
    │   ├── BadTensorError            BAD_TENSOR: bytes disagree with dtype x shape, bad dtype
    │   ├── TooLargeError             TOO_LARGE: message over the receiver's size limit
    │   └── BadHandleError            BAD_HANDLE: a forged, stale or foreign shared-memory handle
    ├── TargetError                   the message names something that does not exist
    │   ├── UnknownTargetError        UNKNOWN_TARGET: worker, node, graph or run
    │   └── UnknownFunctionError      UNKNOWN_FUNCTION: function not offered by the worker
    ├── GraphError                    INVALID_GRAPH: cycles, dangling or doubly-fed inputs
    │   ├── ShapeMismatchError        SHAPE_MISMATCH: shapes do not fit along an edge / input
    │   ├── DTypeMismatchError        DTYPE_MISMATCH: dtypes do not fit along an edge / input
    │   ├── LayoutMismatchError       LAYOUT_MISMATCH: NCHW meets NHWC along an edge
    │   └── GraphInvalidError         GRAPH_INVALID: a registered graph no longer fits a worker
    ├── RunError                      a run (or call) started but did not finish well
    │   ├── FunctionFailedError       FUNCTION_FAILED: the plugin raised
    │   ├── WorkerLostError           WORKER_LOST: the worker died or stopped heartbeating
    │   ├── RunTimeoutError           TIMEOUT: a deadline passed (also a builtin TimeoutError)
    │   ├── CoordinatorRestartedError COORDINATOR_RESTARTED: the run's coordinator restarted
    │   └── RunCancelledError         CANCELLED: cancelled by a client
    ├── UnsupportedError              UNSUPPORTED: valid request the target cannot do
    │   └── ModelMismatchError        INCOMPATIBLE: models do not fit a model operation
    ├── UnauthorizedError             UNAUTHORIZED: the sender's role may not do this
    ├── BusyError                     BUSY: backpressure, try again later
    └── InternalError                 INTERNAL: a bug on the replying side
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_FRAME = "bad_frame"
    BAD_HEADER = "bad_header"
    VERSION = "version"
    UNKNOWN_KIND = "unknown_kind"
    BAD_TENSOR = "bad_tensor"
    TOO_LARGE = "too_large"
    BAD_HANDLE = "bad_handle"
    UNKNOWN_TARGET = "unknown_target"
    UNKNOWN_FUNCTION = "unknown_function"
    INVALID_GRAPH = "invalid_graph"
    SHAPE_MISMATCH = "shape_mismatch"
    DTYPE_MISMATCH = "dtype_mismatch"
    LAYOUT_MISMATCH = "layout_mismatch"
    GRAPH_INVALID = "graph_invalid"
    FUNCTION_FAILED = "function_failed"
    WORKER_LOST = "worker_lost"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    COORDINATOR_RESTARTED = "coordinator_restarted"
    UNSUPPORTED = "unsupported"
    INCOMPATIBLE = "incompatible"
    BAD_ARGUMENT = "bad_argument"
    UNAUTHORIZED = "unauthorized"
    BUSY = "busy"
    INTERNAL = "internal"


MAX_MESSAGE_CHARS = 2000
MAX_LOCATION_CHARS = 300


def cut_text(text: Any, limit: int) -> Any:
    if isinstance(text, str) and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


class InteropError(Exception):
    """Base of every interop-runtime error; carries what the wire ERROR carries."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        node: str | None = None,
        edge: str | None = None,
        worker: str | None = None,
    ) -> None:
        # messages quote what a peer sent: cut them so that an ERROR always fits a header
        message = cut_text(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.field = cut_text(field, MAX_LOCATION_CHARS)
        self.node = cut_text(node, MAX_LOCATION_CHARS)
        self.edge = cut_text(edge, MAX_LOCATION_CHARS)
        self.worker = cut_text(worker, MAX_LOCATION_CHARS)

    def details(self) -> dict[str, Any]:
        """The non-empty location fields, as the wire ERROR carries them."""
        out = {"field": self.field, "node": self.node, "edge": self.edge, "worker": self.worker}
        return {k: v for k, v in out.items() if v is not None}

    def __str__(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.details().items())
        return f"[{self.code.value}] {self.message}" + (f" ({where})" if where else "")


class ProtocolError(InteropError):
    code = ErrorCode.BAD_FRAME


class BadFrameError(ProtocolError):
    code = ErrorCode.BAD_FRAME


class BadHeaderError(ProtocolError):
    code = ErrorCode.BAD_HEADER


class VersionError(ProtocolError):
    code = ErrorCode.VERSION


class UnknownKindError(ProtocolError):
    code = ErrorCode.UNKNOWN_KIND


class BadTensorError(ProtocolError):
    code = ErrorCode.BAD_TENSOR


class TooLargeError(ProtocolError):
    code = ErrorCode.TOO_LARGE


class BadHandleError(ProtocolError):
    """A shared-memory handle that is forged, stale (its segment was reused), or names
    memory that is not a live segment of the sender's pool. The message never repeats the
    handle: handles are capabilities and stay out of errors and logs."""

    code = ErrorCode.BAD_HANDLE


class TargetError(InteropError):
    code = ErrorCode.UNKNOWN_TARGET


class UnknownTargetError(TargetError):
    code = ErrorCode.UNKNOWN_TARGET


class UnknownFunctionError(TargetError):
    code = ErrorCode.UNKNOWN_FUNCTION


class GraphError(InteropError):
    code = ErrorCode.INVALID_GRAPH


class ShapeMismatchError(GraphError):
    code = ErrorCode.SHAPE_MISMATCH


class DTypeMismatchError(GraphError):
    code = ErrorCode.DTYPE_MISMATCH


class LayoutMismatchError(GraphError):
    code = ErrorCode.LAYOUT_MISMATCH


class GraphInvalidError(GraphError):
    """A registered graph whose worker changed its functions so that an edge no longer
    fits; its runs are refused until it fits again."""

    code = ErrorCode.GRAPH_INVALID


class RunError(InteropError):
    code = ErrorCode.FUNCTION_FAILED


class FunctionFailedError(RunError):
    code = ErrorCode.FUNCTION_FAILED


class WorkerLostError(RunError):
    code = ErrorCode.WORKER_LOST


class RunTimeoutError(RunError, TimeoutError):  # ``except TimeoutError`` catches it too
    code = ErrorCode.TIMEOUT


class RunCancelledError(RunError):
    code = ErrorCode.CANCELLED


class CoordinatorRestartedError(RunError):
    code = ErrorCode.COORDINATOR_RESTARTED


class UnsupportedError(InteropError):
    code = ErrorCode.UNSUPPORTED


class BadArgumentError(InteropError, ValueError):
    """A model operation was called with an argument it cannot take (a training order out
    of range, a checkpoint that is not one); raised by the client library, never by a
    worker's function (that is FunctionFailedError). A ValueError too, so ``except
    ValueError`` still catches it."""

    code = ErrorCode.BAD_ARGUMENT


class ModelMismatchError(UnsupportedError):
    """Two models (or parameter sets) do not fit a model operation: a copy, an average,
    a broadcast. A subclass of UnsupportedError, so older handlers still catch it."""

    code = ErrorCode.INCOMPATIBLE


class UnauthorizedError(InteropError):
    code = ErrorCode.UNAUTHORIZED


class BusyError(InteropError):
    code = ErrorCode.BUSY


class InternalError(InteropError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[ErrorCode, type[InteropError]] = {
    cls.code: cls
    for cls in (
        BadFrameError, BadHeaderError, VersionError, UnknownKindError, BadTensorError,
        TooLargeError, BadHandleError, UnknownTargetError, UnknownFunctionError, GraphError,
        ShapeMismatchError, DTypeMismatchError, LayoutMismatchError, GraphInvalidError,
        FunctionFailedError,
        WorkerLostError, RunTimeoutError, RunCancelledError, CoordinatorRestartedError,
        UnsupportedError, ModelMismatchError, BadArgumentError,
        UnauthorizedError, BusyError, InternalError,
    )
}


def error_class(code: str) -> type[InteropError]:
    """The exception class for a wire code; unknown codes map to InternalError."""
    try:
        return _BY_CODE[ErrorCode(code)]
    except (ValueError, KeyError):  # a code this side does not know (or map)
        return InternalError


def make_error(code: str, message: str, **where: str | None) -> InteropError:
    return error_class(code)(message, **where)
