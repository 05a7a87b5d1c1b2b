"""A direct path's same-host shared memory: the segments it sends, the ones it receives.

Inputs for a worker on our host go into a segment of our pool (or, for a shared input
array, its own segment, lent); outputs that a worker sent us as handles are copied out and
released at once, or handed to the caller as views (client/views.py) and released once
dropped. Releases coming back free our segments; leases no worker released in time are
taken back. One per DirectPath: only the thread that owns its sockets calls it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Container, Mapping
from typing import Any

import numpy as np
import zmq

from interop_runtime.client.shared_inputs import SharedArrays
from interop_runtime.client.views import MAX_HANDLES_PER_RELEASE, ReleaseQueue
from interop_runtime.transport.shm import SegmentPool, ShmHandle, frames_only
from interop_runtime.transport.shm_maps import SegmentMaps
from interop_runtime.transport.sockets import send_msg
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.dtypes import to_numpy_dtype, wire_dtype
from interop_runtime.wire.errors import BadHeaderError, InteropError
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg

log = logging.getLogger("interop.client")

POOL_BYTES = 1 << 30
LEASE_S = 600.0  # SPEC 17.4: a lease not released within this is taken back

Holder = tuple[str, str]  # (the worker's endpoint, the run)


class ClientMemory:
    def __init__(self, host: str | None, shared_inputs: SharedArrays | None) -> None:
        self.host = host  # None: frames only
        self.shared_inputs = shared_inputs  # the client's, for all its threads
        self.pool: SegmentPool | None = None  # made on the first large same-host input
        self.maps = SegmentMaps(max_maps=64) if host else None
        self.dropped = ReleaseQueue()  # zero-copy outputs the caller let go of
        self._next_lease_check = 0.0

    def split(self, tensors: Mapping[str, np.ndarray], peer_host: str | None, holder: Holder
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Which inputs go as frames, and which as handles for a worker on ``peer_host``."""
        if self.host is None or peer_host != self.host:
            return dict(tensors), {}
        framed: dict[str, np.ndarray] = {}
        shared: dict[str, Any] = {}
        for name, array in tensors.items():
            if frames_only(array):
                framed[name] = array
                continue
            handle = self.shared_inputs.lend(array, holder) if self.shared_inputs else None
            if handle is None:  # not a shared input array (or one in use): copy it
                if self.pool is None:
                    self.pool = SegmentPool(max_bytes=POOL_BYTES)
                handle = self.pool.write(np.ascontiguousarray(array), holder)
            shared[name] = (wire_dtype(array.dtype), list(array.shape), handle.to_wire())
        return framed, shared

    def take(self, sock: zmq.Socket[bytes], run: str, shared: Mapping[str, Any], *,
             copy: bool) -> dict[str, np.ndarray]:
        """Outputs a worker sent as handles: copied out and released now, or (``copy=False``)
        views released once the caller drops them."""
        out, handles = {}, []
        for name, meta in shared.items():
            try:
                handle = ShmHandle.from_wire(meta.shm.model_dump())
                if self.maps is None:
                    raise BadHeaderError("this client declined shared memory")
                view = self.maps.view(handle, to_numpy_dtype(meta.dtype), tuple(meta.shape))
            except InteropError as exc:
                log.warning("refused a shared-memory output: %s", exc)
                continue
            if not copy:
                out[name] = self.dropped.hold(view, sock, run, handle.to_wire())
                continue
            out[name] = np.array(view)  # ours now: the segment goes back at once
            handles.append(handle.to_wire())
        if handles:
            send_msg(sock, ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client",
                                      action="release", run=run, args={"handles": handles}))
        return out

    def released(self, handles: Any, holder: Holder) -> None:
        """A worker hands back segments we sent it (a CONTROL release's ``handles``)."""
        if not isinstance(handles, list):
            return
        for raw in handles[:MAX_HANDLES_PER_RELEASE]:
            try:
                handle = ShmHandle.from_wire(raw)
                if self.shared_inputs is not None and self.shared_inputs.owns(handle.token):
                    self.shared_inputs.release(handle, holder)
                elif self.pool is not None:
                    self.pool.release(handle, holder)
            except InteropError as exc:
                log.warning("a worker released a segment it does not hold: %s", exc)

    def returning(self, arrays: Mapping[str, Any], live_runs: Container[str]
                  ) -> list[np.ndarray]:
        """The shared input arrays among ``arrays`` whose loan to an ended run is on its
        way back."""
        shared = self.shared_inputs
        if shared is None or not shared.owned_count:
            return []
        return [a for a in arrays.values() if isinstance(a, np.ndarray)
                and shared.returning(a, live_runs)]

    def forget(self, endpoints: set[str], run: str) -> None:
        """A run failed: its workers will not release what we sent them for it."""
        if self.shared_inputs is not None:
            self.shared_inputs.forget({(endpoint, run) for endpoint in endpoints})
        if self.pool is not None:
            for endpoint in endpoints:
                self.pool.reclaim((endpoint, run))

    def expire(self, now: float | None = None) -> None:
        """Once a second at most: a worker that forgot a release (its run was cancelled
        after it ended here) must not keep our segments for good."""
        now = time.monotonic() if now is None else now
        if now < self._next_lease_check:
            return
        self._next_lease_check = now + 1.0
        if self.pool is not None:
            self.pool.expire(now, LEASE_S)
        if self.shared_inputs is not None:
            self.shared_inputs.expire(now, LEASE_S)

    def close(self) -> None:
        for part in (self.pool, self.maps):
            if part is not None:
                part.close()
