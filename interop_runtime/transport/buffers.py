"""Buffer alignment for plugins.

Received tensors are views of ZeroMQ frames, which sit at whatever offset the socket
put them. BLAS kernels pick code paths by alignment, so a misaligned input can give
results that differ in the last bits from the same framework run in-process. A plugin
that wants bit-identical results passes inputs through ``aligned`` (a copy only when
the frame is misaligned).
"""

from __future__ import annotations

import numpy as np

ALIGNMENT = 64  # a cache line; covers AVX-512 loads


def is_aligned(array: np.ndarray, alignment: int = ALIGNMENT) -> bool:
    return array.size == 0 or array.ctypes.data % alignment == 0


def aligned(array: np.ndarray, alignment: int = ALIGNMENT) -> np.ndarray:
    """``array`` itself when aligned, else a C-contiguous copy that starts on ``alignment``."""
    if is_aligned(array, alignment):
        return array
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out
