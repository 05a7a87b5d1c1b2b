"""The worker host: one OS process, one plugin, serving DATA, CONTROL and PARAM.

Sockets: a ROUTER inbox (bound; peers and clients send here), a DEALER to the
coordinator (plans, run inputs, completions), lazily opened DEALERs to peer
inboxes (edges go worker to worker, never through the coordinator), and a
heartbeat thread with its own DEALER so liveness survives a long computation.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from interop_runtime.transport.security import Security, is_wildcard
from interop_runtime.transport.shm import host_key
from interop_runtime.transport.sockets import (
    bind_router,
    connect_dealer,
    readable,
    recv_frames,
    send_msg,
    sender_key,
)
from interop_runtime.wire.codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Envelope,
    decode,
    is_error_message,
    new_id,
)
from interop_runtime.wire.dtypes import load_numpy
from interop_runtime.wire.errors import (
    BadHandleError,
    ErrorCode,
    InteropError,
    UnauthorizedError,
    UnknownKindError,
)
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DataMsg,
    DeregisterMsg,
    ErrorMsg,
    ParamMsg,
    RegisterMsg,
    ReplyMsg,
)
from interop_runtime.worker.authority import check_inbox
from interop_runtime.worker.batching import Batch, Batcher, batching_policies
from interop_runtime.worker.calls import call_function
from interop_runtime.worker.control import ControlHandlers
from interop_runtime.worker.dataplane import DEFAULT_POOL_BYTES, DataPlane
from interop_runtime.worker.heartbeat import Heartbeat
from interop_runtime.worker.lanes import WorkerLanes
from interop_runtime.worker.metrics import WorkerMetrics, tensor_bytes
from interop_runtime.worker.models import ModelTable
from interop_runtime.worker.outbox import Local, Outbox
from interop_runtime.worker.peers import PeerSockets
from interop_runtime.worker.plugin import WorkerPlugin
from interop_runtime.worker.replies import error_msg, internal_error
from interop_runtime.worker.repository import ModelRepository
from interop_runtime.worker.state import Ready, RunMeta, WorkerState

log = logging.getLogger("interop.worker")

DEFAULT_HEARTBEAT_S = 1.0


class WorkerHost(ControlHandlers):
    def __init__(self, name: str, plugin: WorkerPlugin | None, plugin_name: str,
                 coordinator: str, *,
                 bind: str = "tcp://127.0.0.1:0", device: str = "cpu",
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 reload: Any = None, security: Security | None = None,
                 advertise: str | None = None, shm: bool = True,
                 shm_pool_bytes: int = DEFAULT_POOL_BYTES, pool: str | None = None,
                 batching: Any = None, model_roots: tuple[Path, ...] = (),
                 lanes: bool = True) -> None:
        load_numpy()  # tensors are this process's work; the coordinator loads numpy lazily
        # every model of this worker as one plugin; the start-up one (if any) is "default";
        # models loaded over the wire read files inside model_roots only
        plugin = ModelTable(plugin_name, device, plugin, reload=reload, roots=model_roots)
        self.repository: ModelRepository | None = None  # a watched folder (watch())
        # first, before any socket: a function that cannot batch stops the worker here
        policies = batching_policies(batching, {f.name: f for f in plugin.describe()},
                                     plugin.mutates_params)
        self.name, self.plugin, self.plugin_name = name, plugin, plugin_name
        self.pool = pool  # the replica pool it serves in, if any
        self.coordinator_address, self.device = coordinator, device
        self.heartbeat_s, self.max_bytes = heartbeat_s, max_message_bytes
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.security = security
        # mandatory: a direct run's outputs to a client that is not connected fail loudly
        # and go through the coordinator instead of vanishing
        self.inbox, bound = bind_router(self.ctx, bind, max_message_bytes=max_message_bytes,
                                        security=security, mandatory=True)
        # what peers dial: the bound endpoint, unless it is a wildcard they cannot reach
        self.endpoint = advertise or bound
        if is_wildcard(self.endpoint):
            self.inbox.close(0)
            raise ValueError(f"bound {bound}, which peers on other hosts cannot dial: pass "
                             f"--advertise tcp://<this host's address>:<port>")
        self.coord = connect_dealer(self.ctx, coordinator, max_message_bytes=max_message_bytes,
                                    security=security)
        self.poller = zmq.Poller()
        self.poller.register(self.inbox, zmq.POLLIN)
        self.poller.register(self.coord, zmq.POLLIN)
        self.state = WorkerState()
        self.plane = DataPlane(host_key() if shm else None, pool_bytes=shm_pool_bytes)
        # same-host lanes go with the same-host capability: a worker that declines shared
        # memory is treated as on another host (frames over ZeroMQ only)
        self.lanes = WorkerLanes(self.poller, enabled=lanes and self.plane.host is not None)
        self._caller_key: str | None = None  # the CURVE key of the message being handled
        self.peers = PeerSockets(self.ctx, security, max_message_bytes, self.poller,
                                 forget=self.lanes.forget)
        self.outbox = Outbox(name, self.endpoint, self.inbox, self.coord, self.peers, self.plane,
                             self.lanes)
        self.functions = {f.name: f.model_copy(update={"batching": policies.get(f.name)})
                          for f in plugin.describe()}
        self.batchers = {f: Batcher(f, p) for f, p in policies.items()}
        self.param_version = 0
        self.paused = False
        self.held: deque[Ready] = deque()
        self._next_expiry = 0.0
        self.running = True
        self.heartbeat = Heartbeat(self.ctx, coordinator, name, heartbeat_s, security)
        self.metrics = self.outbox.metrics = WorkerMetrics()  # sent on every heartbeat
        self.metrics.batched = set(policies)
        self.heartbeat.stats = lambda: self.metrics.snapshot(len(self.state.pending), self.plugin)

    # --- lifecycle -----------------------------------------------------------------------

    def register(self, timeout_s: float = 30.0) -> None:
        """Announce ourselves until the coordinator answers (it may start after us)."""
        deadline = time.monotonic() + timeout_s
        while True:
            msg = RegisterMsg(v=PROTOCOL_VERSION, id=new_id(), src=self.name, name=self.name,
                              plugin=self.plugin_name, device=self.device, endpoint=self.endpoint,
                              public_key=self.security.public_text if self.security else None,
                              functions=list(self.functions.values()), pid=os.getpid(),
                              info={"python": sys.executable,
                                    "python_version": platform.python_version()},
                              host=self.plane.host, pool=self.pool)
            send_msg(self.coord, msg)
            while self.coord.poll(1000):
                _, frames = recv_frames(self.coord, router=False)
                try:
                    env = decode(frames, max_bytes=self.max_bytes)
                except InteropError as exc:
                    log.warning("bad message from the coordinator: %s", exc)
                    continue
                if isinstance(env.msg, ReplyMsg) and env.msg.reply_to == msg.id:
                    self._registered(env.msg.body)
                    return
                if isinstance(env.msg, ErrorMsg) and env.msg.reply_to == msg.id:
                    if env.msg.code == ErrorCode.BUSY:  # our old record is still alive
                        log.info("registration deferred: %s", env.msg.message)
                        time.sleep(0.5)  # it is lost within two heartbeats: ask again soon
                        break
                    raise InteropError(f"coordinator refused registration: {env.msg.message}")
                self._handle(None, env, from_coordinator=True)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no coordinator answered at {self.coordinator_address} "
                                   f"within {timeout_s:.0f}s")

    def _registered(self, body: dict[str, Any]) -> None:
        session = body.get("session")
        self.heartbeat.session = session if isinstance(session, str) else None
        beat = body.get("heartbeat_s")
        if isinstance(beat, (int, float)) and 0 < beat < self.heartbeat.interval:
            self.heartbeat.interval = float(beat)  # never slower than the coordinator expects
        log.info("registered as %s at %s", self.name, self.endpoint)

    def serve_forever(self) -> None:
        self.register()
        self.heartbeat.start()
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        try:
            while self.running:
                try:
                    self.poll_once(200)
                except (zmq.ContextTerminated, KeyboardInterrupt, InteropError):
                    raise  # shutting down, or the coordinator refused us
                except Exception:  # the loop outlives any one bug
                    log.exception("internal error in the worker loop; carrying on")
        finally:
            self.close()

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        try:
            send_msg(self.coord, DeregisterMsg(v=PROTOCOL_VERSION, id=new_id(), name=self.name,
                                               src=self.name, reason="shutdown"), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self.heartbeat.stop_event.set()
        self.heartbeat.join(timeout=2 * self.heartbeat_s + 1)
        self.peers.close()
        self.lanes.close()
        self.plane.close()
        for sock in [self.inbox, self.coord]:
            sock.close(0)
        self.plugin.close()

    # --- the loop --------------------------------------------------------------------------

    def poll_once(self, timeout_ms: int) -> None:
        events = dict(self.poller.poll(self._batch_timeout(timeout_ms)))
        for sock in events:
            if isinstance(sock, int):  # a lane's descriptor (gone already if a handler closed it)
                if self.lanes.owns(sock):
                    self.lanes.on_ready(sock, self._on_lane)
                continue
            router = sock is self.inbox
            # drain what is there now, in order, before polling again
            while True:
                try:
                    peer, frames = recv_frames(sock, router=router)
                except zmq.Again:
                    break
                self._on_frames(sock, peer, frames)
                if not readable(sock):
                    break
        self._flush_due()  # after the drain: what queued meanwhile joined the open batches
        if self.heartbeat.unknown_to_coordinator.is_set():
            self.heartbeat.unknown_to_coordinator.clear()
            log.warning("coordinator does not know us (restarted?); registering again")
            self.register()
        now = time.monotonic()
        if now >= self._next_expiry:  # a scan of the tables, not per message
            self._next_expiry = now + 0.5
            self.state.expire(now)
            self.plane.expire(now)
            self.lanes.expire(now)
        if self.repository is not None and self.repository.poll(now):
            self._models_changed()

    def _batch_timeout(self, timeout_ms: int) -> int:
        """Wake for the earliest open batch's deadline (not while paused: it waits)."""
        now = time.monotonic()
        return timeout_ms if self.paused else min(
            [b.wake_ms(timeout_ms, now) for b in self.batchers.values()], default=timeout_ms)

    def _flush_due(self) -> None:
        if self.paused:
            return
        now = time.monotonic()
        for batch in [b for batcher in self.batchers.values() for b in batcher.due(now)]:
            for graph, run, node, ins, meta in self._run_batch(batch):
                try:  # DATA for our own nodes, as a message from ourselves would bring it
                    self._on_data(DataMsg(v=PROTOCOL_VERSION, id=new_id(), graph=graph, run=run,
                                          node=node), ins, meta)
                except InteropError as exc:
                    self._report_failure(graph, run, node, exc)

    def _on_lane(self, lane: Any, frames: list[Any]) -> None:
        """A message on a lane: the inbox connection it was offered to sent it."""
        self._on_frames(self.inbox, lane.peer, frames, lane_key=(lane.key,))

    def _on_frames(self, sock: zmq.Socket[bytes], peer: bytes | None, frames: list[Any], *,
                   lane_key: tuple[str | None] | None = None) -> None:
        try:
            env = decode(frames, max_bytes=self.max_bytes)
        except InteropError as exc:
            log.warning("bad message: %s", exc, extra={"code": exc.code.value, "worker": self.name})
            if not is_error_message(frames):
                self._reply(sock, peer, error_msg(exc, src=self.name, reply_to=None))
            return
        if sock is self.inbox or sock is self.coord:
            key = lane_key[0] if lane_key is not None else (
                sender_key(frames) if self.security is not None else None)
            self._handle((sock, peer), env, from_coordinator=sock is self.coord, key=key)
        elif isinstance(env.msg, ControlMsg) and env.msg.action == "release":
            holder = (self.peers.endpoints.get(sock, ""), env.msg.run or "")
            self._on_release(env.msg, holder)
        elif isinstance(env.msg, ReplyMsg):  # a peer's answer to our request for a lane
            self.lanes.answered(env.msg)
        elif isinstance(env.msg, ErrorMsg):  # a peer rejected DATA we sent
            log.warning("peer error: %s", env.msg.message)

    def _reply(self, sock: zmq.Socket[bytes], peer: bytes | None, msg: Any, arrays: Any = None) -> None:
        try:
            send_msg(sock, msg, arrays, peer=peer, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not reply: %s", exc)

    def _handle(self, origin: tuple[zmq.Socket[bytes], bytes | None] | None, env: Envelope, *,
                from_coordinator: bool, key: str | None = None) -> None:
        msg = env.msg
        sock, peer = origin if origin else (self.coord, None)
        self._caller_key = key
        try:
            if not from_coordinator:
                check_inbox(self.security, self.state, msg, {**env.arrays, **env.shared}, key)
            self.metrics.bytes_in += tensor_bytes(env)
            if isinstance(msg, DataMsg):
                self._on_data(msg, *self.plane.received(msg, env, peer, from_coordinator,
                                                          self.state))
            elif isinstance(msg, ControlMsg):
                self._on_control(sock, peer, msg, env.arrays)
            elif isinstance(msg, ParamMsg):
                self._on_param(sock, peer, msg, env.arrays)
            elif isinstance(msg, (ReplyMsg, ErrorMsg)):
                if isinstance(msg, ErrorMsg) and msg.code == ErrorCode.UNKNOWN_TARGET \
                        and from_coordinator and msg.field == "name":
                    self.heartbeat.unknown_to_coordinator.set()
            else:
                raise UnknownKindError(f"a worker does not accept {msg.kind!r} messages",
                                       field="kind")
        except Exception as exc:  # every failure becomes a typed reply; the loop goes on
            err = exc if isinstance(exc, InteropError) else internal_error(exc)
            # DATA refused for who sent it says nothing about the run: a stranger's message
            # must not be able to fail someone else's run
            if isinstance(msg, DataMsg) and not isinstance(err, UnauthorizedError):
                self._report_failure(msg.graph, msg.run, msg.node, err)
            self._reply(sock, peer, error_msg(err, src=self.name, reply_to=msg.id,
                                              run=getattr(msg, "run", None)))

    # --- DATA: the run path ------------------------------------------------------------------

    def _on_data(self, msg: DataMsg, arrays: dict[str, np.ndarray],
                 meta: RunMeta | None = None) -> None:
        work: deque[Local] = deque([(msg.graph, msg.run, msg.node, arrays, meta or RunMeta())])
        while work:
            graph, run, node, ins, meta = work.popleft()
            ready = self.state.accept(graph, run, node, ins, time.monotonic(), meta)
            if ready is None:
                continue
            if self.paused:
                self.held.append(ready)
                continue
            work.extend(self._execute(ready))

    def _execute(self, ready: Ready) -> list[Local]:
        """Run one ready node, or hand it to its function's batcher; send outputs on; return
        DATA addressed to ourselves."""
        batcher = self.batchers.get(ready.plan.function)
        if batcher is None:
            return self._run(ready)
        return [loc for b in batcher.add(ready, time.monotonic()) for loc in self._run_batch(b)]

    def _run_batch(self, batch: Batch) -> list[Local]:
        """One call for the batch's runs; if it fails, each runs alone (errors stay per run)."""
        live, gone = batch.settle(time.monotonic(), self.state.cancelled)
        for ready in gone:  # cancelled while it waited: only its segments go back
            self.outbox.release(self.plane.done_with(ready.meta.leases), ready.run)
        runs = [i.ready for i in live.items]
        if len(runs) == 1:
            self.metrics.batch(live.function, 1)
            return self._run(runs[0])
        try:
            outputs, compute_us = self._call(live.function, live.stack(), runs[0].plan.args,
                                             node=runs[0].plan.node)
            parts = live.split(outputs)
        except (InteropError, ValueError) as exc:
            log.info("a batch of %d runs of %s failed (%s); running each alone", len(runs),
                     live.function, exc)
            return [loc for r in runs for loc in self._run(r)]
        self.metrics.batch(live.function, len(runs))
        local: list[Local] = []
        for ready, outs in zip(runs, parts, strict=True):  # each to its own consumers
            local += self.outbox.deliver(ready, outs, compute_us)
            self.outbox.release(self.plane.done_with(ready.meta.leases), ready.run)
        return local

    def _run(self, ready: Ready) -> list[Local]:
        """Run one node alone."""
        try:
            outputs, compute_us = self._call(ready.plan.function, ready.inputs, ready.plan.args,
                                             node=ready.plan.node)
        except InteropError as exc:
            self._report_failure(ready.graph, ready.run, ready.plan.node, exc)
            local: list[Local] = []
        else:
            local = self.outbox.deliver(ready, outputs, compute_us)
        # the inputs are used: segments go back (those forwarded wait for downstream)
        self.outbox.release(self.plane.done_with(ready.meta.leases), ready.run)
        return local

    def _call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any], *,
              node: str | None = None) -> tuple[dict[str, np.ndarray], int]:
        """The function's outputs and its time in microseconds, counted in the metrics."""
        t0 = time.perf_counter_ns()
        try:
            outputs = call_function(self.plugin, self.functions, function, inputs, args,
                                    node=node, worker=self.name)
        except InteropError:
            self.metrics.call(function, (time.perf_counter_ns() - t0) // 1000, ok=False)
            raise
        compute_us = (time.perf_counter_ns() - t0) // 1000
        self.metrics.call(function, compute_us, ok=True)
        if self.plugin.mutates_params(function):
            self.param_version += 1
        return outputs, compute_us

    def _report_failure(self, graph: str, run: str, node: str, exc: InteropError) -> None:
        self.outbox.fail(graph, run, node, exc)

    def _on_release(self, msg: ControlMsg, holder: tuple[str, str]) -> None:
        handles = msg.args.get("handles")
        if not isinstance(handles, list) or len(handles) > 1024:
            raise BadHandleError("release needs a list of handles", field="args.handles")
        self.outbox.release(self.plane.released(handles, holder), msg.run or "")
