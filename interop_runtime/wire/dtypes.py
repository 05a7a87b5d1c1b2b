"""The closed set of wire dtype names and their numpy equivalents.

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

_NUMPY_TO_WIRE: dict[np.dtype, str] = {v: k for k, v in _WIRE_TO_NUMPY.items()}


def to_numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype for a wire dtype name; BadTensorError for anything else."""
    try:
        return _WIRE_TO_NUMPY[name]
    except KeyError:
        raise BadTensorError(f"unknown dtype {name!r}; expected one of {', '.join(WIRE_DTYPES)}",
                             field="dtype") from None


def wire_dtype(dtype: np.dtype | type | str) -> str:
    """The wire name of a numpy dtype (any byte order); BadTensorError if not on the wire."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    name = _NUMPY_TO_WIRE.get(dt)
    if name is None:
        raise BadTensorError(f"dtype {dt} cannot travel on the wire", field="dtype")
    return name


def itemsize(name: str) -> int:
    return to_numpy_dtype(name).itemsize
