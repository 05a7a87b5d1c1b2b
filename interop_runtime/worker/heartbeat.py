"""The heartbeat thread: its own socket, so that a long computation never looks like a death."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import zmq

from interop_runtime.transport.security import Security
from interop_runtime.transport.sockets import connect_dealer, recv_frames, send_msg
from interop_runtime.wire.codec import decode, new_id
from interop_runtime.wire.errors import ErrorCode, InteropError
from interop_runtime.wire.messages import PROTOCOL_VERSION, ErrorMsg, HeartbeatMsg, WorkerStats


class Heartbeat(threading.Thread):
    """Sends HEARTBEAT on its own socket; flags when the coordinator no longer knows us."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], coordinator: str, name: str, interval: float,
                 security: Security | None) -> None:
        super().__init__(name="interop-heartbeat", daemon=True)
        self.ctx, self.coordinator, self.worker, self.interval = ctx, coordinator, name, interval
        self.security = security
        self.stop_event = threading.Event()
        self.unknown_to_coordinator = threading.Event()
        self.session: str | None = None  # from the REGISTER reply; proves the beat is ours
        self.stats: Callable[[], WorkerStats] | None = None  # the worker's metrics, per beat

    def run(self) -> None:
        sock = connect_dealer(self.ctx, self.coordinator, security=self.security)
        try:
            while not self.stop_event.is_set():
                send_msg(sock, HeartbeatMsg(v=PROTOCOL_VERSION, id=new_id(), name=self.worker,
                                            src=self.worker, session=self.session,
                                            stats=self._stats()),
                         flags=zmq.NOBLOCK)
                due = time.monotonic() + self.interval
                while (left := due - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
                    _, frames = recv_frames(sock, router=False)
                    try:
                        msg = decode(frames).msg
                    except InteropError:
                        continue
                    if isinstance(msg, ErrorMsg) and msg.code == ErrorCode.UNKNOWN_TARGET:
                        self.unknown_to_coordinator.set()
        except zmq.ZMQError:
            pass  # context terminated at shutdown
        finally:
            sock.close(0)

    def _stats(self) -> WorkerStats | None:
        try:
            return self.stats() if self.stats is not None else None
        except Exception:  # a metric must never stop the beat
            return None
