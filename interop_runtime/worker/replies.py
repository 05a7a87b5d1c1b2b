"""What a worker sends back when something went wrong, and how a plugin's output becomes
an ndarray."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import (
    MAX_LOCATION_CHARS,
    BadHeaderError,
    InternalError,
    InteropError,
    cut_text,
)
from interop_runtime.wire.messages import PROTOCOL_VERSION, ErrorMsg
from interop_runtime.wire.model import WireValidationError, error_location

log = logging.getLogger("interop.worker")


def to_host_array(value: Any) -> np.ndarray:
    """Plugins return numpy arrays or anything numpy can view; make it an ndarray."""
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def error_msg(exc: InteropError, *, src: str, reply_to: str | None, run: str | None = None
              ) -> ErrorMsg:
    return ErrorMsg(v=PROTOCOL_VERSION, id=new_id(), src=src, reply_to=reply_to,
                    code=exc.code.value, message=exc.message, run=cut_text(run, MAX_LOCATION_CHARS),
                    **exc.details())


def internal_error(exc: Exception) -> InteropError:
    log.exception("unexpected error while handling a message")
    if isinstance(exc, WireValidationError):
        loc, problem = error_location(exc)
        return BadHeaderError(f"invalid request: {problem}", field=loc or None)
    return InternalError(f"{type(exc).__name__}: {exc}")
