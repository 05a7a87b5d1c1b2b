"""The coordinator daemon: a thin loop that carries out what CoordinatorState decides."""

from __future__ import annotations

import ctypes
import logging
import signal
import time
from typing import TYPE_CHECKING, Any

import zmq

from interop_runtime.coordinator.health import HealthServer, snapshot
from interop_runtime.coordinator.metrics import CoordinatorMetrics
from interop_runtime.coordinator.state import CoordinatorState, Send
from interop_runtime.coordinator.store import Store
from interop_runtime.transport.security import Security, check_bind_allowed
from interop_runtime.transport.sockets import (
    bind_router,
    readable,
    recv_frames,
    send_msg,
    sender_key,
)
from interop_runtime.wire.codec import DEFAULT_MAX_MESSAGE_BYTES, decode, is_error_message
from interop_runtime.wire.errors import InteropError

if TYPE_CHECKING:
    from interop_runtime.coordinator.dashboard import Dashboard

log = logging.getLogger("interop.coordinator")

SEND_HWM = 1_000  # messages queued per peer at most
TRIM_EVERY_S = 5.0


class Coordinator:
    def __init__(self, bind: str = "tcp://127.0.0.1:5555", *, state_path: str = ":memory:",
                 heartbeat_s: float = 1.0, dead_after_s: float | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 run_timeout_s: float = 300.0, security: Security | None = None,
                 insecure: bool = False, metrics_port: int | None = None,
                 metrics_addr: str = "127.0.0.1", max_runs: int = 10_000,
                 max_runs_per_client: int = 1_000, dashboard_port: int | None = None,
                 dashboard_addr: str = "127.0.0.1") -> None:
        check_bind_allowed(bind, security, insecure)
        self.secure = security is not None
        if dashboard_port is not None:  # refuse before binding anything
            # imported only here: its HTTP server is memory an idle coordinator without the
            # dashboard does not pay (issue 10, goal 6)
            from interop_runtime.coordinator.dashboard import check_dashboard_allowed

            check_dashboard_allowed(dashboard_addr, security is not None)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.max_bytes = max_message_bytes
        # a per-peer send queue of 1,000 messages bounds what a client that never reads can
        # make the coordinator hold; beyond it, sends fail and are handled as undeliverable
        self.sock, self.endpoint = bind_router(self.ctx, bind, max_message_bytes=max_message_bytes,
                                               mandatory=True, security=security, hwm=SEND_HWM)
        if security is None:
            log.warning("INSECURE: no CURVE keys; every local process may act as any client "
                        "or worker (loopback only)")
        self.store = Store(state_path)
        self.metrics = CoordinatorMetrics()
        # /metrics, /healthz, /readyz; 404 elsewhere
        self.http = (HealthServer(self.metrics, metrics_port, metrics_addr)
                     if metrics_port is not None else None)
        self.metrics_port = self.http.port if self.http is not None else None
        self.state = CoordinatorState(self.store, heartbeat_s=heartbeat_s, metrics=self.metrics,
                                      dead_after_s=dead_after_s,
                                      default_run_timeout_s=run_timeout_s,
                                      max_runs_in_flight=max_runs,
                                      max_runs_per_client=max_runs_per_client,
                                      roles=security.roles if security else None)
        # the web dashboard: its HTTP thread reads only snapshots this loop publishes
        self.dashboard: Dashboard | None = None
        if dashboard_port is not None:
            from interop_runtime.coordinator.dashboard import Dashboard

            self.dashboard = Dashboard(dashboard_port, dashboard_addr, secure=security is not None)
        self.tick_s = min(0.1, heartbeat_s / 8)
        self.running = True
        self._last_trim = time.monotonic()
        self._publish_health()

    def serve_forever(self) -> None:
        log.info("coordinator listening on %s (state: %s)", self.endpoint, self.store.path)
        if self.metrics_port is not None:
            log.info("metrics at http://%s:%d/metrics (health: /healthz, /readyz)", "127.0.0.1",
                     self.metrics_port)
        if self.dashboard is not None:
            log.info("dashboard at %s", self.dashboard.url)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        poller = zmq.Poller()  # one, not one per poll as Socket.poll makes
        poller.register(self.sock, zmq.POLLIN)
        try:
            next_tick = time.monotonic()
            while self.running:
                timeout = max(0, int((next_tick - time.monotonic()) * 1000))
                try:
                    if poller.poll(timeout):
                        self._drain()
                    if time.monotonic() >= next_tick:
                        self._carry_out(self.state.tick())
                        next_tick = time.monotonic() + self.tick_s
                        self._publish_health()
                        if self.dashboard is not None:
                            self.dashboard.tick(self.state)
                        self._trim_memory()
                    self.store.commit()
                except zmq.ContextTerminated:
                    break
                except Exception:  # the loop outlives any one bug
                    log.exception("internal error in the coordinator loop; carrying on")
        finally:
            self.close()
        log.info("coordinator stopped")

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.dashboard is not None:
            self.dashboard.close()
        self.sock.close(0)
        self.store.close()

    def _drain(self, limit: int = 1000) -> None:
        for _ in range(limit):
            try:
                peer, frames = recv_frames(self.sock, router=True)
            except zmq.Again:
                return
            try:
                env = decode(frames, max_bytes=self.max_bytes)
            except InteropError as exc:
                log.warning("bad message from %s: %s", peer.hex() if peer else "?", exc,
                            extra={"code": exc.code.value})
                if not is_error_message(frames):
                    self._carry_out(self.state.bad_message(peer or b"", exc))
            else:
                key = sender_key(frames) if self.secure else None  # plain text: no keys
                self._carry_out(self.state.handle(peer or b"", env, key=key))
            del frames  # the frames' memory goes back now, not at the next message
            if not readable(self.sock):
                return

    def _carry_out(self, sends: list[Send]) -> None:
        if self.store.urgent:  # a record a client is about to rely on survives a crash
            self.store.commit()
        for s in sends:
            try:
                send_msg(self.sock, s.msg, s.arrays, peer=s.peer, flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or its queue is full
                log.warning("could not deliver %s to %s: %s", s.msg.kind, s.peer.hex(), exc)
                self._carry_out(self.state.undeliverable(s, gone=exc.errno == zmq.EHOSTUNREACH))
            except Exception:
                log.exception("could not encode %s for %s", s.msg.kind, s.peer.hex())


    def _publish_health(self) -> None:
        """The HTTP thread reads this snapshot; it never touches the state itself."""
        if self.http is not None and self.http.due():
            self.http.publish(snapshot(self.state, self.store.path))

    def _trim_memory(self) -> None:
        """Give freed memory back to the OS every few seconds: after a flood (a client that
        queued replies and left) glibc keeps the freed arenas otherwise."""
        now = time.monotonic()
        if now - self._last_trim < TRIM_EVERY_S or _LIBC is None:
            return
        self._last_trim = now
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc
        return None


_LIBC = _load_libc()


def run_coordinator(**kwargs: Any) -> None:
    Coordinator(**kwargs).serve_forever()
