"""The closed set of wire dtype names and their numpy equivalents.

``WIRE_DTYPES`` are the fixed-width dtypes: a frame of ``count * itemsize`` bytes.
``STRING`` is the one variable-width dtype (UTF-8 with offsets, wire/strings.py); it
decodes to numpy object arrays of str. ``DTYPE_NAMES`` is every name a header may carry.

bfloat16 has no numpy dtype of its own; ml_dtypes provides one that numpy can
view bytes through without copying.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from interop_runtime.wire.errors import BadTensorError

# Wire name -> numpy dtype, all little-endian. The order is the spec's table order.
_WIRE_TO_NUMPY: dict[str, np.dtype] = {
    "bool": np.dtype(np.bool_),
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "complex64": np.dtype("<c8"),
    "complex128": np.dtype("<c16"),
}

WIRE_DTYPES: tuple[str, ...] = tuple(_WIRE_TO_NUMPY)
STRING = "string"
DTYPE_NAMES: tuple[str, ...] = (*WIRE_DTYPES, STRING)
_STRING_KINDS = "OUT"  # object (of str), fixed-width unicode, StringDType

_NUMPY_TO_WIRE: dict[np.dtype, str] = {v: k for k, v in _WIRE_TO_NUMPY.items()}


def to_numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype for a wire dtype name; BadTensorError for anything else."""
    if name == STRING:
        return np.dtype(object)
    try:
        return _WIRE_TO_NUMPY[name]
    except KeyError:
        raise BadTensorError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPE_NAMES)}",
                             field="dtype") from None


def wire_dtype(dtype: np.dtype | type | str) -> str:
    """The wire name of a numpy dtype (any byte order); BadTensorError if not on the wire."""
    dt = np.dtype(dtype)
    if dt.kind in _STRING_KINDS:  # the elements are checked to be str when encoded
        return STRING
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    name = _NUMPY_TO_WIRE.get(dt)
    if name is None:
        raise BadTensorError(f"dtype {dt} cannot travel on the wire", field="dtype")
    return name


def itemsize(name: str) -> int:
    """Bytes per element of a fixed-width dtype; strings have none (BadTensorError)."""
    if name == STRING:
        raise BadTensorError("dtype string has no fixed itemsize", field="dtype")
    return to_numpy_dtype(name).itemsize
