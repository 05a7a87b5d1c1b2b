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
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from interop_runtime.transport.shm import SegmentPool, ShmHandle, frames_only
from interop_runtime.transport.shm_maps import SegmentMaps
from interop_runtime.wire.codec import Envelope
from interop_runtime.wire.dtypes import to_numpy_dtype, wire_dtype
from interop_runtime.wire.errors import BadHandleError
from interop_runtime.wire.messages import DataMsg, TensorMeta
from interop_runtime.worker.state import RunMeta, WorkerState

log = logging.getLogger("interop.worker")

DEFAULT_POOL_BYTES = 4 << 30
MAX_RUNS_TRACKED = 10_000  # runs whose leases a cancel can reclaim
DEFAULT_LEASE_S = 600.0  # the longest a consumer may hold a segment before it is reclaimed

Shared = dict[str, tuple[str, list[int], dict[str, Any]]]  # name -> (dtype, shape, handle)


class DataPlane:
    def __init__(self, host: str | None, *, pool_bytes: int = DEFAULT_POOL_BYTES,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        self.host = host  # None: shared memory declined, frames only
        self.pool = SegmentPool(max_bytes=pool_bytes) if host else None
        self.maps = SegmentMaps() if host else None
        self.lease_s = lease_s
        self.holders_by_run: dict[str, set[Hashable]] = {}
        # (token, gen) of a received segment forwarded downstream -> [sender, handle, count,
        # run]; bounded by the leases we hold, and dropped with a cancelled run
        self.forwards: dict[tuple[str, int], list[Any]] = {}
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
              holder: tuple[str, str], upstream: list[tuple[bytes, ShmHandle]]
              ) -> tuple[dict[str, np.ndarray], Shared]:
        """Which tensors go as frames and which as handles for a consumer on ``peer_host``;
        ``holder`` (consumer, run) is who must release them. Raises BusyError when the pool
        is full."""
        if self.pool is None or peer_host != self.host:
            return self.owned(tensors), {}
        framed: dict[str, np.ndarray] = {}
        shared: Shared = {}
        for name, array in tensors.items():
            if frames_only(array):
                framed[name] = self.owned({name: array})[name]
                continue
            handle = self._forwardable(array, upstream, holder[1])
            if handle is None:
                handle = self.pool.write(np.ascontiguousarray(array), holder)
                self._note_holder(holder)
            shared[name] = (wire_dtype(array.dtype), list(array.shape), handle.to_wire())
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

    def _forwardable(self, array: np.ndarray, upstream: list[tuple[bytes, ShmHandle]],
                     run: str) -> ShmHandle | None:
        """A handle for ``array`` if it is a view of a segment we received for this node."""
        if self.maps is None or not upstream:
            return None
        handle = self.maps.locate(array)
        if handle is None:
            return None
        for sender, up in upstream:
            if (up.token, up.gen) == (handle.token, handle.gen):
                entry = self.forwards.setdefault((up.token, up.gen), [sender, up, 0, run])
                entry[2] += 1
                return handle
        return None

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
        releases that forwarded segments now allow. Raises BadHandleError."""
        upstream: dict[bytes, list[ShmHandle]] = {}
        for raw in handles:
            handle = ShmHandle.from_wire(raw)
            fwd = self.forwards.get((handle.token, handle.gen))
            if fwd is not None:
                fwd[2] -= 1
                if fwd[2] <= 0:
                    del self.forwards[(handle.token, handle.gen)]
                    upstream.setdefault(fwd[0], []).append(fwd[1])
                continue
            if self.pool is None:
                raise BadHandleError("this process has no shared memory to release",
                                     field="handles")
            self.pool.release(handle, holder)
        return upstream

    def cancel(self, run: str) -> int:
        """A run ended badly: its consumers will not release, so take their segments back."""
        for key in [k for k, f in self.forwards.items() if f[3] == run]:
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
