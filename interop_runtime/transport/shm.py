"""Same-host shared memory for tensors: the producer's pool of reused segments.

A producer writes a tensor into a segment and sends a small ``ShmHandle`` instead of
the bytes; a consumer on the same host (see ``host_key``) maps the segment read-only
with ``shm_maps.SegmentMaps``. Segments are anonymous memfd files, so nothing is left in
/dev/shm when a process crashes: the kernel frees the memory once the last fd and the
last mapping are gone.

Lifetime rule: a segment is reused only after the consumer it was sent to releases it. A
lease the producer takes back without a release (the consumer is gone, its run failed, or
the lease is too old) drops the segment from the pool instead: a consumer that is slow
rather than dead may still be reading it, so it is never written again, and the kernel
frees it once the last mapping goes.

Segment layout (little-endian)::

    offset 0   8 bytes   magic  b"IRSHM\\x00\\x00\\x01"
    offset 8   uint64    generation: bumped on every lease, checked by consumers
    offset 16  48 bytes  reserved (zero)
    offset 64  ...       data, 64-byte aligned

Handles are capabilities: their token never goes into a repr, a log or an error.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import struct
import sys
import time
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from interop_runtime.wire.errors import BadHandleError, BusyError
from interop_runtime.wire.strings import is_string_array

MAGIC = b"IRSHM\x00\x00\x01"
GEN_OFFSET = 8
HEADER_BYTES = 64
GEN_STRUCT = struct.Struct("<Q")
_WIRE_KEYS = frozenset({"token", "pid", "fd", "off", "len", "gen"})
_TOKEN = re.compile(r"[0-9a-f]{32}")
_INT_LIMIT = 1 << 63


SHM_MIN_BYTES = 64 * 1024  # below this a frame costs less than a segment round trip


def frames_only(array: np.ndarray) -> bool:
    """Whether a tensor goes as a frame, never a segment: small ones, and strings (the
    codec builds their frame; a segment would hold the object pointers)."""
    return array.nbytes < SHM_MIN_BYTES or is_string_array(array)


@dataclass(frozen=True, repr=False)
class ShmHandle:
    """Where a tensor's bytes lie: segment ``fd`` of process ``pid``, bytes off..off+len."""

    token: str
    pid: int
    fd: int
    off: int
    len: int
    gen: int

    def __repr__(self) -> str:
        return f"ShmHandle(<redacted>, len={self.len})"

    def to_wire(self) -> dict[str, int | str]:
        return {"token": self.token, "pid": self.pid, "fd": self.fd,
                "off": self.off, "len": self.len, "gen": self.gen}

    @classmethod
    def from_wire(cls, obj: object) -> ShmHandle:
        """Validate a handle a peer sent; anything but the exact shape is refused."""
        if not isinstance(obj, dict) or set(obj) != _WIRE_KEYS:
            raise BadHandleError("shm handle must be a map with exactly the keys "
                                 + ", ".join(sorted(_WIRE_KEYS)), field="shm")
        token = obj["token"]
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise BadHandleError("shm handle token must be 32 lowercase hex digits", field="shm")
        ints: dict[str, int] = {}
        for key in ("pid", "fd", "off", "len", "gen"):
            value = obj[key]
            # type() and not isinstance(): bool is an int subclass
            if type(value) is not int or not 0 <= value < _INT_LIMIT:
                raise BadHandleError(f"shm handle {key} must be an int in [0, 2**63)",
                                     field="shm")
            ints[key] = value
        return cls(token=token, **ints)


def host_key() -> str | None:
    """Equal for two processes exactly when they can map each other's segments:
    same boot, same pid namespace (so /proc/<pid> names the same process), same user."""
    if not sys.platform.startswith("linux") or not hasattr(os, "memfd_create"):
        return None
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot_id}:{pid_ns}:{os.getuid()}"


def _round_capacity(nbytes: int, min_segment: int) -> int:
    # powers of two keep the set of sizes small, so freed segments fit later leases
    return max(min_segment, 1 << max(nbytes - 1, 0).bit_length())


def create_segment(token: str, size: int) -> tuple[mmap.mmap, int]:
    """A new segment of ``size`` bytes (header included), mode 0600, its magic written:
    its map and its fd."""
    fd = os.memfd_create(f"interop-{token}", os.MFD_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)  # note: mmap keeps its own dup of fd
    except BaseException:
        os.close(fd)
        raise
    mm[:len(MAGIC)] = MAGIC
    return mm, fd


@dataclass(eq=False)
class _Segment:
    token: str
    fd: int
    capacity: int  # data bytes, excluding the header
    mm: mmap.mmap
    gen: int = 0
    leased: bool = False
    holder: Hashable = None
    leased_at: float = 0.0
    nbytes: int = 0
    group: str | None = None  # the share of the pool its lease counts against

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:
            pass  # a caller still holds a view: the map goes when that view does
        os.close(self.fd)


class SegmentPool:
    """Producer side: leases segments to holders (the peers they are sent to)."""

    def __init__(self, max_bytes: int = 1 << 30, min_segment: int = 1 << 20) -> None:
        if max_bytes <= 0 or min_segment <= 0:
            raise ValueError("max_bytes and min_segment must be positive")
        self.max_bytes = max_bytes
        self.min_segment = _round_capacity(min_segment, 1)
        self._segments: dict[str, _Segment] = {}
        # holder -> tokens it holds; only holders with a lease have an entry,
        # so this table is bounded by the segment count, not by the peers seen
        self._held: dict[Hashable, set[str]] = {}
        self._group_bytes: dict[str, int] = {}  # capacity leased per group (a few names)

    @property
    def capacity_bytes(self) -> int:
        return sum(s.capacity for s in self._segments.values())

    @property
    def leased_count(self) -> int:
        return sum(1 for s in self._segments.values() if s.leased)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def lease(self, nbytes: int, holder: Hashable, *, group: str | None = None,
              group_limit: int | None = None) -> tuple[ShmHandle, np.ndarray]:
        """A segment for ``holder`` and a writable uint8 view of its first ``nbytes``.
        With ``group``: BusyError rather than let that group's leases pass ``group_limit``
        bytes of capacity (a share of the pool for holders that may keep leases long)."""
        if nbytes < 0:
            raise ValueError("nbytes must be non-negative")
        held = self._group_bytes.get(group, 0) if group is not None else 0
        if group_limit is not None and held + _round_capacity(nbytes, self.min_segment) \
                > group_limit:
            raise BusyError(f"{group} leases hold {held} of the {group_limit} bytes of the "
                            f"pool they may take")
        seg = self._free_fitting(nbytes) or self._new_segment(nbytes)
        if group_limit is not None and held + seg.capacity > group_limit:
            raise BusyError(f"{group} leases hold {held} of the {group_limit} bytes of the "
                            f"pool they may take")  # the free segment that fits is too big
        if group is not None:
            seg.group = group
            self._group_bytes[group] = self._group_bytes.get(group, 0) + seg.capacity
        seg.gen += 1
        GEN_STRUCT.pack_into(seg.mm, GEN_OFFSET, seg.gen)
        seg.leased, seg.holder, seg.nbytes = True, holder, nbytes
        seg.leased_at = time.monotonic()
        self._held.setdefault(holder, set()).add(seg.token)
        view = np.frombuffer(seg.mm, dtype=np.uint8, count=nbytes, offset=HEADER_BYTES)
        handle = ShmHandle(seg.token, os.getpid(), seg.fd, HEADER_BYTES, nbytes, seg.gen)
        return handle, view

    def write(self, array: np.ndarray, holder: Hashable, *, group: str | None = None,
              group_limit: int | None = None) -> ShmHandle:
        """Copy ``array``'s C-order bytes into a leased segment."""
        if array.dtype.hasobject:
            raise TypeError("object arrays cannot go into shared memory")
        data = np.ascontiguousarray(array)
        handle, view = self.lease(data.nbytes, holder, group=group, group_limit=group_limit)
        view[:] = data.reshape(-1).view(np.uint8)
        return handle

    def release(self, handle: ShmHandle, holder: Hashable) -> None:
        """``holder`` is done with ``handle``: the segment may be leased again."""
        self._free(self._releasable(handle, holder))

    def check_release(self, handle: ShmHandle, holder: Hashable) -> None:
        """Raise BadHandleError where ``release`` would, freeing nothing."""
        self._releasable(handle, holder)

    def _releasable(self, handle: ShmHandle, holder: Hashable) -> _Segment:
        seg = self._segments.get(handle.token)
        if seg is None or handle.pid != os.getpid() or handle.fd != seg.fd:
            raise BadHandleError("shm handle names no segment of this pool", field="shm")
        if not seg.leased:
            raise BadHandleError("shm segment is not leased", field="shm")
        if handle.gen != seg.gen:
            raise BadHandleError("shm handle is stale: its segment was leased again",
                                 field="shm")
        if seg.holder != holder:
            # a peer may only release what was sent to it
            raise BadHandleError("shm segment is held by another peer", field="shm")
        return seg

    def reclaim(self, holder: Hashable) -> int:
        """Take back every segment ``holder`` holds (it is gone, or will not release):
        they leave the pool unwritten. Returns how many."""
        tokens = list(self._held.get(holder, ()))
        for token in tokens:
            self._drop(self._segments[token])
        return len(tokens)

    def expire(self, now: float, lease_s: float) -> int:
        """Take back leases taken more than ``lease_s`` before ``now`` (time.monotonic),
        as ``reclaim`` does: their holders may still read them."""
        old = [s for s in self._segments.values() if s.leased and now - s.leased_at > lease_s]
        for seg in old:
            self._drop(seg)
        return len(old)

    def trim(self, keep_bytes: int) -> int:
        """Close free segments, largest first, until capacity <= keep_bytes; returns how many."""
        return self._drop_free(self.capacity_bytes - keep_bytes)

    def close(self) -> None:
        for seg in self._segments.values():
            seg.close()
        self._segments.clear()
        self._held.clear()

    def __enter__(self) -> SegmentPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _free_fitting(self, nbytes: int) -> _Segment | None:
        fitting = [s for s in self._segments.values() if not s.leased and s.capacity >= nbytes]
        return min(fitting, key=lambda s: s.capacity, default=None)

    def _new_segment(self, nbytes: int) -> _Segment:
        capacity = _round_capacity(nbytes, self.min_segment)
        over = self.capacity_bytes + capacity - self.max_bytes
        if over > 0 and capacity <= self.max_bytes:
            self._drop_free(over)  # free segments too small for this lease make room
        if self.capacity_bytes + capacity > self.max_bytes:
            raise BusyError(f"shared-memory pool exhausted: {self.leased_count} leased, "
                            f"{self.capacity_bytes} of {self.max_bytes} bytes in use, "
                            f"{nbytes} asked")
        token = secrets.token_hex(16)
        try:
            mm, fd = create_segment(token, HEADER_BYTES + capacity)
        except OSError as e:
            # out of fds or memory: the caller falls back to frames, as when full
            raise BusyError(f"shared-memory pool cannot create a segment: {e.strerror}") from None
        seg = _Segment(token, fd, capacity, mm)
        self._segments[token] = seg
        return seg

    def _drop_free(self, nbytes: int) -> int:
        dropped, freed = 0, 0
        free = sorted((s for s in self._segments.values() if not s.leased),
                      key=lambda s: s.capacity, reverse=True)
        for seg in free:
            if freed >= nbytes:
                break
            del self._segments[seg.token]
            seg.close()
            freed += seg.capacity
            dropped += 1
        return dropped

    def _drop(self, seg: _Segment) -> None:
        self._free(seg)
        del self._segments[seg.token]
        seg.close()

    def _free(self, seg: _Segment) -> None:
        tokens = self._held.get(seg.holder)
        if tokens is not None:
            tokens.discard(seg.token)
            if not tokens:
                del self._held[seg.holder]
        if seg.group is not None:
            self._group_bytes[seg.group] -= seg.capacity
        seg.leased, seg.holder, seg.nbytes, seg.group = False, None, 0, None
