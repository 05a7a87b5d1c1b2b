"""Shared input arrays: memory the caller fills in place, which runs send without a copy.

``Client.shared_array(shape, dtype)`` gives a writable array that lives in a segment of
its own (transport/shm.py layout). A run that takes it as an input, for a worker on this
host, sends that worker a handle to it instead of copying it into the client's pool: for
large inputs that is the one copy a direct run still made. The caller's side of the
bargain: do not write to the array while a run that uses it is in flight.

Each array goes to one consumer at a time. While a worker holds a handle to it (until it
releases it, or the run ends badly), another run or another target of the same run gets
a copy, as for any array. Each loan bumps the segment's generation, so a handle from an
earlier run is stale. The segment is closed once the caller has dropped the array and no
worker holds it; workers that mapped it keep their own mapping.

Finalizers run on whatever thread frees the array, so they only queue; the table is
changed under a lock by the calls below.
"""

from __future__ import annotations

import math
import mmap
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Container, Hashable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from interop_runtime.client.views import tracked
from interop_runtime.transport.shm import (
    GEN_OFFSET,
    GEN_STRUCT,
    HEADER_BYTES,
    ShmHandle,
    create_segment,
)
from interop_runtime.wire.errors import BadHandleError, BusyError


@dataclass(eq=False)
class _Segment:
    token: str
    fd: int
    mm: mmap.mmap
    base: int  # address of the data's first byte
    nbytes: int
    gen: int = 0
    holder: Hashable = None  # the (endpoint, run) it is lent to, if any
    lent_at: float = 0.0
    dropped: bool = False

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:
            pass  # a view is still alive: the map goes with it
        os.close(self.fd)


@dataclass
class SharedArrays:
    """The client's shared input arrays, for every thread of it."""

    max_bytes: int = 1 << 30
    _segments: dict[str, _Segment] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dropped: deque[str] = field(default_factory=deque)

    def new(self, shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
        want = np.dtype(dtype)
        if want.hasobject:
            raise TypeError("object arrays cannot live in shared memory")
        nbytes = math.prod(shape) * want.itemsize
        with self._lock:
            self._collect()
            held = sum(s.nbytes for s in self._segments.values())
            if held + nbytes > self.max_bytes:
                raise BusyError(f"shared input arrays would take {held + nbytes} bytes, over "
                                f"this client's {self.max_bytes}: drop some first")
            token = secrets.token_hex(16)
            mm, fd = create_segment(token, HEADER_BYTES + max(nbytes, 1))
            raw = np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=HEADER_BYTES)
            seg = _Segment(token, fd, mm, raw.ctypes.data, nbytes)
            self._segments[token] = seg
        return tracked(raw.view(want).reshape(shape), lambda: self._dropped.append(token),
                       readonly=False)

    @property
    def owned_count(self) -> int:
        return len(self._segments)

    def owns(self, token: str) -> bool:
        return token in self._segments

    def lend(self, array: np.ndarray, holder: Hashable) -> ShmHandle | None:
        """A handle to ``array``'s bytes for ``holder`` if they are a whole shared array
        that nobody holds now; else None (the caller copies, as for any array)."""
        if not array.flags.c_contiguous or array.dtype.hasobject:
            return None
        addr: int = array.__array_interface__["data"][0]
        with self._lock:
            self._collect()
            seg = next((s for s in self._segments.values()
                        if s.base == addr and s.nbytes == array.nbytes), None)
            if seg is None or seg.holder is not None or seg.dropped:
                return None
            seg.gen += 1
            GEN_STRUCT.pack_into(seg.mm, GEN_OFFSET, seg.gen)
            seg.holder, seg.lent_at = holder, time.monotonic()
            return ShmHandle(seg.token, os.getpid(), seg.fd, HEADER_BYTES, seg.nbytes, seg.gen)

    def returning(self, array: np.ndarray, live_runs: Container[str]) -> bool:
        """Whether ``array`` is a shared array lent to a run that has ended here: its
        release is on its way back."""
        addr: int = array.__array_interface__["data"][0]
        seg = next((s for s in list(self._segments.values()) if s.base == addr), None)
        holder = seg.holder if seg is not None else None
        return isinstance(holder, tuple) and holder[1] not in live_runs

    def release(self, handle: ShmHandle, holder: Hashable) -> None:
        """``holder`` is done reading; raises BadHandleError for a handle not lent to it."""
        with self._lock:
            seg = self._segments.get(handle.token)
            if seg is None or handle.fd != seg.fd or handle.pid != os.getpid():
                raise BadHandleError("shm handle names no shared array of this client",
                                     field="shm")
            if handle.gen != seg.gen or seg.holder != holder:
                raise BadHandleError("shm handle is not lent to this peer now", field="shm")
            seg.holder = None
            self._collect()

    def forget(self, holders: set[Hashable]) -> None:
        """Runs that ended badly: their consumers will not release."""
        with self._lock:
            for seg in self._segments.values():
                if seg.holder in holders:
                    seg.holder = None
            self._collect()

    def expire(self, now: float, lease_s: float) -> None:
        """Take back loans older than ``lease_s`` (a consumer that never released)."""
        with self._lock:
            for seg in self._segments.values():
                if seg.holder is not None and now - seg.lent_at > lease_s:
                    seg.holder = None
            self._collect()

    def close(self) -> None:
        with self._lock:
            for seg in self._segments.values():
                seg.close()
            self._segments.clear()

    def _collect(self) -> None:
        """Close what the caller dropped and no worker holds (under the lock)."""
        while self._dropped:
            seg = self._segments.get(self._dropped.popleft())
            if seg is not None:
                seg.dropped = True
        for token in [t for t, s in self._segments.items() if s.dropped and s.holder is None]:
            self._segments.pop(token).close()
