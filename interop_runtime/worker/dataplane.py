"""Where a worker's tensor bytes go: buffer frames, or same-host shared memory.

A tensor of at least ``SHM_MIN_BYTES`` for a consumer with our host key goes into a
segment of our pool and travels as a handle (protocol/SPEC.md section 17). The consumer
maps it read-only and, once its node has run, releases it on the connection it came on.
A received tensor that an output is a view of is forwarded by the same handle; then our
release upstream waits for the downstream one. A cancelled run's leases are reclaimed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interop_runtime.transport.shm import SegmentPool, ShmHandle, frames_only
from interop_runtime.transport.shm_maps import SegmentMaps
from interop_runtime.wire.codec import Envelope
from interop_runtime.wire.dtypes import to_numpy_dtype, wire_dtype
from interop_runtime.wire.errors import BadHandleError, BusyError
from interop_runtime.wire.messages import DataMsg, TensorMeta
from interop_runtime.worker.state import RunMeta, WorkerState

log = logging.getLogger("interop.worker")

DEFAULT_POOL_BYTES = 4 << 30
MAX_RUNS_TRACKED = 10_000  # runs whose leases a cancel can reclaim
DEFAULT_LEASE_S = 600.0  # the longest a consumer may hold a segment before it is reclaimed
# the share of the pool that leases to clients may take: a client may hold outputs as
# zero-copy views, and must not leave worker-to-worker edges without room
CLIENT_SHARE = 0.5

Shared = dict[str, tuple[str, list[int], dict[str, Any]]]  # name -> (dtype, shape, handle)


@dataclass
class _Forward:
    """A received segment we sent on by the same handle: whom we owe its release
    (``sender``, ``handle``), and the consumers that owe us theirs, with how many times."""

    sender: bytes
    handle: ShmHandle
    run: str
    holders: Counter[Hashable] = field(default_factory=Counter)


class DataPlane:
    def __init__(self, host: str | None, *, pool_bytes: int = DEFAULT_POOL_BYTES,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        self.host = host  # None: shared memory declined, frames only
        self.pool = SegmentPool(max_bytes=pool_bytes) if host else None
        self.maps = SegmentMaps() if host else None
        self.lease_s = lease_s
        self.holders_by_run: dict[str, set[Hashable]] = {}
        # (token, gen) of a received segment forwarded downstream; bounded by the leases we
        # hold, and dropped with a cancelled run
        self.forwards: dict[tuple[str, int], _Forward] = {}
        self._next_expiry = 0.0

    # --- receiving --------------------------------------------------------------------------

    def resolve(self, shared: Mapping[str, TensorMeta], sender: bytes
                ) -> tuple[dict[str, np.ndarray], list[tuple[bytes, ShmHandle]]]:
        """Read-only views of the tensors a message holds in shared memory, and the leases
        to release once they are used. Raises BadHandleError for a handle that is forged,
        stale or not on this host."""
        if not shared:
            return {}, []
        if self.maps is None:
            raise BadHandleError("this process declined shared memory: send frames",
                                 field="tensors")
        arrays, leases = {}, []
        for name, meta in shared.items():
            assert meta.shm is not None  # the decoder guarantees it for frame 0
            handle = ShmHandle.from_wire(meta.shm.model_dump())
            arrays[name] = self.maps.view(handle, to_numpy_dtype(meta.dtype), tuple(meta.shape))
            leases.append((sender, handle))
        return arrays, leases

    def received(self, msg: DataMsg, env: Envelope, peer: bytes | None, from_coordinator: bool,
                 state: WorkerState) -> tuple[dict[str, np.ndarray], RunMeta]:
        """A DATA's tensors (shared memory mapped) and what travels with them. A client's
        own DATA names it by its connection, never by a header it could forge."""
        if env.shared and (from_coordinator or peer is None):
            raise BadHandleError("the coordinator sends frames only", field="tensors")
        mapped, leases = self.resolve(env.shared, peer or b"")
        arrays = {**env.arrays, **mapped}
        client = msg.client
        if peer is not None and not from_coordinator and arrays and set(arrays) <= set(
                state.plan_node(msg.graph, msg.node).client_inputs):
            client = peer.hex()
        return arrays, RunMeta(client, msg.client_host, dict(msg.timings or {}), leases,
                               dict(msg.place or {}))

    # --- sending ------------------------------------------------------------------------------

    def split(self, tensors: Mapping[str, np.ndarray], peer_host: str | None,
              holder: tuple[str, str], upstream: list[tuple[bytes, ShmHandle]], *,
              to_client: bool = False) -> tuple[dict[str, np.ndarray], Shared]:
        """Which tensors go as frames and which as handles for a consumer on ``peer_host``;
        ``holder`` (consumer, run) is who must release them. Raises BusyError when the pool
        is full, or (``to_client``) when leases to clients would pass their share."""
        if self.pool is None or peer_host != self.host:
            return self.owned(tensors), {}
        framed: dict[str, np.ndarray] = {}
        shared: Shared = {}
        forwarded: list[tuple[bytes, ShmHandle]] = []  # noted only once all went well
        written: list[ShmHandle] = []
        try:
            for name, array in tensors.items():
                if frames_only(array):
                    framed[name] = self.owned({name: array})[name]
                    continue
                handle, lease = self._forwardable(array, upstream)
                if handle is not None and lease is not None:
                    forwarded.append(lease)
                else:
                    handle = self.pool.write(
                        np.ascontiguousarray(array), holder,
                        group="client" if to_client else None,
                        group_limit=int(self.pool.max_bytes * CLIENT_SHARE) if to_client
                        else None)
                    written.append(handle)
                shared[name] = (wire_dtype(array.dtype), list(array.shape), handle.to_wire())
        except BusyError:
            for handle in written:  # nothing of this split goes out
                self.pool.release(handle, holder)
            raise
        if written:
            self._note_holder(holder)
        for sender, up in forwarded:
            entry = self.forwards.setdefault((up.token, up.gen),
                                             _Forward(sender, up, holder[1]))
            entry.holders[holder] += 1
        return framed, shared

    def owned(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``tensors`` with views of received segments copied: for frames and local inputs,
        which outlive our lease (a zero-copy frame is sent after we have released)."""
        if self.maps is None:
            return dict(tensors)
        # an array that owns its memory (base None) is no view of anything
        return {n: a.copy() if a.base is not None and a.nbytes and self.maps.locate(a)
                is not None else a for n, a in tensors.items()}

    def _note_holder(self, holder: tuple[str, str]) -> None:
        self.holders_by_run.setdefault(holder[1], set()).add(holder)
        if len(self.holders_by_run) > MAX_RUNS_TRACKED:  # oldest first: those expire instead
            del self.holders_by_run[next(iter(self.holders_by_run))]

    def _forwardable(self, array: np.ndarray, upstream: list[tuple[bytes, ShmHandle]]
                     ) -> tuple[ShmHandle | None, tuple[bytes, ShmHandle] | None]:
        """A handle for ``array`` if it is a view of a segment we received for this node,
        and that segment's lease (sender, handle)."""
        if self.maps is None or not upstream:
            return None, None
        handle = self.maps.locate(array)
        if handle is None:
            return None, None
        for sender, up in upstream:
            if (up.token, up.gen) == (handle.token, handle.gen):
                return handle, (sender, up)
        return None, None

    # --- releasing ----------------------------------------------------------------------------

    def done_with(self, leases: list[tuple[bytes, ShmHandle]]
                  ) -> dict[bytes, list[ShmHandle]]:
        """A node has run: the leases to release now, by sender. Forwarded ones wait for
        their downstream release."""
        out: dict[bytes, list[ShmHandle]] = {}
        for sender, handle in leases:
            if (handle.token, handle.gen) not in self.forwards:
                out.setdefault(sender, []).append(handle)
        return out

    def released(self, handles: list[Any], holder: tuple[str, str]
                 ) -> dict[bytes, list[ShmHandle]]:
        """A consumer released ``handles``: free our segments, and return the upstream
        releases that forwarded segments now allow. Every handle is checked before any is
        freed: one that was not sent to ``holder`` (or not that many times) raises
        BadHandleError, and nothing is freed."""
        parsed = [ShmHandle.from_wire(raw) for raw in handles]
        owed: Counter[tuple[str, int]] = Counter()
        for handle in parsed:
            key = (handle.token, handle.gen)
            fwd = self.forwards.get(key)
            if fwd is not None:
                owed[key] += 1
                if owed[key] > fwd.holders[holder]:
                    raise BadHandleError("shm segment was not forwarded to this peer",
                                         field="handles")
            elif self.pool is None:
                raise BadHandleError("this process has no shared memory to release",
                                     field="handles")
            else:
                if owed[key]:
                    raise BadHandleError("shm handle is released twice", field="handles")
                self.pool.check_release(handle, holder)
                owed[key] += 1
        upstream: dict[bytes, list[ShmHandle]] = {}
        for handle in parsed:
            key = (handle.token, handle.gen)
            fwd = self.forwards.get(key)
            if fwd is None:
                assert self.pool is not None
                self.pool.release(handle, holder)
                continue
            fwd.holders[holder] -= 1
            if fwd.holders[holder] <= 0:
                del fwd.holders[holder]
            if not fwd.holders:
                del self.forwards[key]
                upstream.setdefault(fwd.sender, []).append(fwd.handle)
        return upstream

    def cancel(self, run: str) -> int:
        """A run ended badly: its consumers will not release, so take their segments back."""
        for key in [k for k, f in self.forwards.items() if f.run == run]:
            del self.forwards[key]  # its consumers will not release; its producer reclaims
        if self.pool is None:
            return 0
        return sum(self.pool.reclaim(h) for h in self.holders_by_run.pop(run, ()))

    def cancel_holder(self, holder: tuple[str, str]) -> None:
        if self.pool is not None:
            self.pool.reclaim(holder)

    def expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.pool is None or now < self._next_expiry:
            return
        self._next_expiry = now + 1.0
        if self.pool.expire(now, self.lease_s):
            log.warning("reclaimed shared-memory segments held over %.0fs", self.lease_s)

    def stats(self) -> dict[str, int] | None:
        """The pool's segments, those leased, and its bytes (None: shared memory off)."""
        if self.pool is None:
            return None
        return {"segments": self.pool.segment_count, "leased": self.pool.leased_count,
                "capacity_bytes": self.pool.capacity_bytes, "forwarded": len(self.forwards)}

    def close(self) -> None:
        for part in (self.pool, self.maps):
            if part is not None:
                part.close()
