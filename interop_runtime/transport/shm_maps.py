"""Same-host shared memory for tensors: the consumer's cache of mapped segments.

A consumer maps a producer's segment (``shm.SegmentPool``) read-only through
``/proc/<pid>/fd/<fd>`` once and serves every later handle into it from the cache. Each
handle is checked before its bytes are shown: it must name a live interop segment of
that process, owned by this user, lie inside it, and carry the segment's current
generation. The lifetime rule of ``shm`` holds: a consumer releases a handle only when
it no longer reads the view it got for it.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from interop_runtime.transport.shm import GEN_OFFSET, GEN_STRUCT, HEADER_BYTES, MAGIC, ShmHandle
from interop_runtime.wire.errors import BadHandleError, BadTensorError

# A forged handle may name any fd of the sender (a FIFO, a tty): never block or
# acquire a controlling terminal while opening it.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY

_MapKey = tuple[int, int, str]


@dataclass(eq=False)
class _Map:
    token: str
    pid: int
    fd: int
    mm: mmap.mmap
    base: int  # address of the segment's first byte in this process
    gen: int  # generation of the last handle viewed through this map

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:
            pass  # views still exported: the map goes when the last of them does


def _refuse(why: str) -> BadHandleError:
    return BadHandleError(why, field="shm")


def _open_segment(handle: ShmHandle) -> _Map:
    expected = f"/memfd:interop-{handle.token} (deleted)"
    path = f"/proc/{handle.pid}/fd/{handle.fd}"
    try:
        # readlink first, so a forged handle never makes us open an unrelated file
        if os.readlink(path) != expected:
            raise _refuse("shm handle does not name a segment of the sending process")
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        raise _refuse("shm segment cannot be opened: its process or fd is gone") from None
    try:
        # checked again on our own fd: the sender's fd may have changed in between
        if os.readlink(f"/proc/self/fd/{fd}") != expected:
            raise _refuse("shm handle does not name a segment of the sending process")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise _refuse("shm segment is not a regular file owned by this user")
        if info.st_size < HEADER_BYTES:
            raise _refuse("shm segment is smaller than its header")
        mm = mmap.mmap(fd, info.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except OSError:
        raise _refuse("shm segment cannot be mapped") from None
    finally:
        os.close(fd)  # the mapping keeps the memory alive
    if mm[:len(MAGIC)] != MAGIC:
        mm.close()
        raise _refuse("shm segment has no interop header")
    base = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
    return _Map(handle.token, handle.pid, handle.fd, mm, base, handle.gen)


class SegmentMaps:
    """Consumer side: an LRU cache of read-only segment maps, at most ``max_maps``."""

    def __init__(self, max_maps: int = 256) -> None:
        if max_maps <= 0:
            raise ValueError("max_maps must be positive")
        self.max_maps = max_maps
        self._maps: OrderedDict[_MapKey, _Map] = OrderedDict()

    @property
    def map_count(self) -> int:
        return len(self._maps)

    def view(self, handle: ShmHandle, dtype: npt.DTypeLike, shape: tuple[int, ...]
             ) -> np.ndarray:
        """A read-only array of ``dtype`` x ``shape`` over the handle's bytes."""
        want = np.dtype(dtype)
        if want.hasobject:
            raise BadTensorError("object dtypes cannot be read from shared memory")
        if any(type(d) is not int or d < 0 for d in shape):
            raise BadTensorError("shape must be non-negative ints")
        if handle.len != math.prod(shape) * want.itemsize:
            raise _refuse("shm handle length disagrees with dtype x shape")
        seg = self._mapped(handle)
        if handle.off < HEADER_BYTES or handle.off + handle.len > len(seg.mm):
            raise _refuse("shm handle offset/length lie outside the segment data")
        (gen,) = GEN_STRUCT.unpack_from(seg.mm, GEN_OFFSET)
        if gen != handle.gen:
            raise _refuse("shm handle is stale: its segment was leased again")
        seg.gen = gen
        raw = np.frombuffer(seg.mm, dtype=np.uint8, count=handle.len, offset=handle.off)
        return raw.view(want).reshape(shape)

    def locate(self, array: np.ndarray) -> ShmHandle | None:
        """A handle for ``array``'s bytes if they lie inside one of our maps, else None,
        so a received tensor can be forwarded without a copy."""
        if not array.flags.c_contiguous:
            return None
        addr: int = array.__array_interface__["data"][0]
        for seg in self._maps.values():
            off = addr - seg.base
            if HEADER_BYTES <= off and off + array.nbytes <= len(seg.mm):
                return ShmHandle(seg.token, seg.pid, seg.fd, off, array.nbytes, seg.gen)
        return None

    def close(self) -> None:
        for seg in self._maps.values():
            seg.close()
        self._maps.clear()

    def __enter__(self) -> SegmentMaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mapped(self, handle: ShmHandle) -> _Map:
        key = (handle.pid, handle.fd, handle.token)
        seg = self._maps.get(key)
        if seg is not None:
            self._maps.move_to_end(key)
            return seg
        seg = _open_segment(handle)
        self._maps[key] = seg
        while len(self._maps) > self.max_maps:
            _, oldest = self._maps.popitem(last=False)
            oldest.close()
        return seg
