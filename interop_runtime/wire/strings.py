"""The ``string`` dtype's frame: Arrow's ``large_utf8`` layout in one buffer.

A string tensor of N elements (any shape, C order) is one frame::

    offsets: (N + 1) x int64 little-endian | data: UTF-8 bytes, no separators or NULs added
    element i = data[offsets[i]:offsets[i + 1]]

``offsets[0]`` is 0, offsets never decrease, and ``offsets[N]`` is the length of
``data``, so the frame is exactly ``8 * (N + 1) + offsets[N]`` bytes. The length of the
offsets part follows from the shape alone: no extra header field, one frame per tensor
like every other dtype. Decoding checks all of it, and every element's UTF-8, before a
single str is made; a fault is a BadTensorError naming the tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interop_runtime.wire.errors import BadTensorError, TooLargeError

if TYPE_CHECKING:
    import numpy as np

OFFSET = "<i8"  # Arrow large_utf8: no 2 GiB ceiling, and signed like Arrow's
OFFSET_BYTES = 8


def is_string_array(a: np.ndarray) -> bool:
    """Whether ``a`` travels as dtype ``string``: object, ``<U`` or StringDType arrays."""
    return a.dtype.kind in "OUT"


def offsets_nbytes(count: int) -> int:
    return (count + 1) * OFFSET_BYTES


def encode_strings(a: np.ndarray, name: str) -> bytes:
    """The frame of a string array (elements in C order); BadTensorError for an element
    that is not a str or not encodable as UTF-8 (a lone surrogate)."""
    import numpy as np

    items = a.ravel(order="C").tolist() if a.ndim else [a[()]]
    parts: list[bytes] = [b""]
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise BadTensorError(f"tensor {name!r}: element {i} is {type(item).__name__}, not "
                                 f"str; string tensors hold str only", field=name)
        try:
            parts.append(item.encode("utf-8"))
        except UnicodeEncodeError:
            raise BadTensorError(f"tensor {name!r}: element {i} is not valid Unicode (a lone "
                                 f"surrogate?); it cannot be encoded as UTF-8",
                                 field=name) from None
    offsets = np.zeros(len(items) + 1, OFFSET)
    np.cumsum([len(p) for p in parts[1:]], out=offsets[1:])
    parts[0] = offsets.tobytes()
    return b"".join(parts)


def check_size(count: int, name: str, where: str, max_bytes: int) -> None:
    """Refuse a shape whose offsets alone would be over the receiver's limit."""
    if offsets_nbytes(count) > max_bytes:
        raise TooLargeError(f"tensor {name!r}: {count} strings need {offsets_nbytes(count)} "
                            f"bytes of offsets, over this receiver's limit of {max_bytes}",
                            field=where)


def decode_strings(frame: Any, shape: list[int], name: str, where: str) -> np.ndarray:
    """A read-only numpy object array of str from a string frame; BadTensorError when the
    offsets disagree with the shape or the data, or an element is not valid UTF-8."""
    import numpy as np

    buf = memoryview(frame).cast("B")
    count = 1
    for dim in shape:
        count *= dim
    head = offsets_nbytes(count)
    if buf.nbytes < head:
        raise BadTensorError(f"tensor {name!r}: frame has {buf.nbytes} bytes but {count} strings "
                             f"need {head} bytes of offsets first", field=where)
    offsets = np.frombuffer(buf, OFFSET, count=count + 1)
    size = buf.nbytes - head
    _check_offsets(offsets, size, name, where)
    data = bytes(buf[head:])  # one copy; each str is made from it
    out = np.empty(count, dtype=object)
    bounds = offsets.tolist()
    for i in range(count):
        try:
            out[i] = data[bounds[i]:bounds[i + 1]].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadTensorError(f"tensor {name!r}: element {i} is not valid UTF-8 (byte "
                                 f"{bounds[i] + exc.start} of the data)", field=where) from None
    out = out.reshape(shape)
    out.flags.writeable = False  # like every decoded tensor
    return out


def _check_offsets(offsets: np.ndarray, size: int, name: str, where: str) -> None:
    # bounds first: with every offset in [0, size] the differences below cannot overflow
    import numpy as np

    if offsets[0] != 0:
        raise BadTensorError(f"tensor {name!r}: the first offset is {int(offsets[0])}, not 0",
                             field=where)
    outside = (offsets < 0) | (offsets > size)
    if outside.any():
        i = int(np.argmax(outside))
        raise BadTensorError(f"tensor {name!r}: offset {i} is {int(offsets[i])}, outside the "
                             f"data's {size} bytes", field=where)
    falls = np.diff(offsets) < 0
    if falls.any():
        i = int(np.argmax(falls))
        raise BadTensorError(f"tensor {name!r}: offsets decrease at element {i} "
                             f"({int(offsets[i])} then {int(offsets[i + 1])})", field=where)
    if int(offsets[-1]) != size:
        raise BadTensorError(f"tensor {name!r}: the last offset is {int(offsets[-1])} but the "
                             f"data has {size} bytes", field=where)
