"""The closed set of wire dtype names and their numpy equivalents.

``WIRE_DTYPES`` are the fixed-width dtypes: a frame of ``count * itemsize`` bytes.
``STRING`` is the one variable-width dtype (UTF-8 with offsets, wire/strings.py); it
decodes to numpy object arrays of str. ``DTYPE_NAMES`` is every name a header may carry.

bfloat16 has no numpy dtype of its own; ml_dtypes provides one that numpy can
view bytes through without copying.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from interop_runtime.wire.errors import BadTensorError

if TYPE_CHECKING:
    import numpy as np

# numpy and ml_dtypes are imported on first use, not with the wire: a coordinator that only
# routes control messages (direct runs) never loads them, which is most of its idle memory
# (issue 10, goal 6). The names and sizes below are all that validating a header needs.

# Wire name -> bytes per element, all little-endian. The order is the spec's table order.
_ITEMSIZE: dict[str, int] = {
    "bool": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8,
    "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8,
    "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
    "complex64": 8, "complex128": 16,
}
_NUMPY_CODES: dict[str, str] = {
    "bool": "?", "int8": "<i1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
    "uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
    "float16": "<f2", "float32": "<f4", "float64": "<f8", "complex64": "<c8",
    "complex128": "<c16",
}  # bfloat16: ml_dtypes'

WIRE_DTYPES: tuple[str, ...] = tuple(_ITEMSIZE)
STRING = "string"
DTYPE_NAMES: tuple[str, ...] = (*WIRE_DTYPES, STRING)
_STRING_KINDS = "OUT"  # object (of str), fixed-width unicode, StringDType


@cache
def _tables() -> tuple[dict[str, np.dtype], dict[np.dtype, str]]:
    import ml_dtypes
    import numpy as np

    to_numpy = {name: np.dtype(_NUMPY_CODES[name]) if name != "bfloat16"
                else np.dtype(ml_dtypes.bfloat16) for name in WIRE_DTYPES}
    return to_numpy, {v: k for k, v in to_numpy.items()}


def load_numpy() -> None:
    """Import numpy and ml_dtypes now. A worker does before it serves: the first tensor must
    not wait on an import that holds the GIL (up to a second in a fresh environment, long
    enough to miss heartbeats)."""
    _tables()


def to_numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype for a wire dtype name; BadTensorError for anything else."""
    if name == STRING:
        import numpy as np

        return np.dtype(object)
    try:
        return _tables()[0][name]
    except KeyError:
        raise BadTensorError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPE_NAMES)}",
                             field="dtype") from None


def wire_dtype(dtype: np.dtype | type | str) -> str:
    """The wire name of a numpy dtype (any byte order); BadTensorError if not on the wire."""
    import numpy as np

    dt = np.dtype(dtype)
    if dt.kind in _STRING_KINDS:  # the elements are checked to be str when encoded
        return STRING
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    name = _tables()[1].get(dt)
    if name is None:
        raise BadTensorError(f"dtype {dt} cannot travel on the wire", field="dtype")
    return name


def itemsize(name: str) -> int:
    """Bytes per element of a fixed-width dtype; strings have none (BadTensorError)."""
    if name == STRING:
        raise BadTensorError("dtype string has no fixed itemsize", field="dtype")
    try:
        return _ITEMSIZE[name]
    except KeyError:
        raise BadTensorError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPE_NAMES)}",
                             field="dtype") from None
