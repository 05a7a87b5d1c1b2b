"""The Python client: talks to the coordinator over one DEALER socket.

One I/O thread owns the socket (ZeroMQ sockets are not thread-safe); callers in
any thread hand it frames through an inproc pipe and wait on a Future, so many
runs can be in flight at once from threads or from asyncio. While runs are in
flight the I/O thread also watches the coordinator's epoch (epochs.py), so a run
cut short by a coordinator restart ends with a typed error.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np
import zmq

from interop_runtime.client.direct import DirectPath, DirectRun, Inflight, Routes
from interop_runtime.client.epochs import EpochWatch
from interop_runtime.client.models import Models
from interop_runtime.client.queries import Queries
from interop_runtime.client.results import RunResult
from interop_runtime.client.shared_inputs import SharedArrays
from interop_runtime.client.sync import SyncChannel
from interop_runtime.graph.builder import Graph
from interop_runtime.transport.security import Security
from interop_runtime.transport.sockets import connect_dealer
from interop_runtime.wire.codec import Envelope, decode, encode, new_id
from interop_runtime.wire.deadline import DEFAULT_REQUEST_TIMEOUT_S
from interop_runtime.wire.errors import InteropError, RunTimeoutError, make_error
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    ErrorMsg,
    Header,
    QueryMsg,
    ReplyMsg,
    RunMsg,
)
from interop_runtime.wire.payloads import GraphSpec

log = logging.getLogger("interop.client")
PLAN_GRACE_S = 0.05  # before a direct run asks again about a worker that had no plan for it
# a direct run whose routes changed meanwhile reads them again this often: a pool that grows
# by two replicas at once changes them twice within milliseconds
ROUTE_RETRIES = 3
_pipe_ids = itertools.count()


def _arrays(inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: np.asarray(v) if not hasattr(v, "dtype") else v for k, v in inputs.items()}


def _chain(src: Future[RunResult], dst: Future[RunResult]) -> None:
    try:
        dst.set_result(src.result())
    except BaseException as exc:
        dst.set_exception(exc)


class Client(Queries, Models):  # models.py: load, unload and list models in workers
    def __init__(self, address: str, *, timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
                 max_message_bytes: int | None = None, security: Security | None = None,
                 direct: bool = True) -> None:
        self.address = address
        self.direct = direct  # runs send tensors to the workers, not through the coordinator
        self.default_run_timeout_s = 300.0  # a direct run's own deadline when none is given
        self.security = security
        self.timeout_s = timeout_s
        self.ctx = zmq.Context.instance()
        self._pipe_addr = f"inproc://interop-client-{next(_pipe_ids)}-{id(self)}"
        self._pull = self.ctx.socket(zmq.PULL)
        self._pull.bind(self._pipe_addr)
        self._push = self.ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(self._pipe_addr)
        self._push_lock = threading.Lock()
        self._dealer = connect_dealer(self.ctx, address, max_message_bytes=max_message_bytes,
                                      security=security)
        self._max_bytes = max_message_bytes
        self._futures: dict[str, Future[Envelope]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._registered: dict[str, str] = {}  # graph name -> spec json, to skip re-registering
        self._epochs = EpochWatch()
        # runs in flight per replica, over all threads: what placing a run goes by
        self._inflight = Inflight()
        self._shared_inputs = SharedArrays()  # the caller's arrays that runs send uncopied
        self._sync = SyncChannel(self.ctx, address, security=security,
                                 max_message_bytes=max_message_bytes, inflight=self._inflight,
                                 shared_inputs=self._shared_inputs)
        self._detached: dict[str, str] = {}  # detached run -> the epoch it started under
        self._routes: dict[str, Routes | None] = {}  # graph -> direct routes (None: not direct)
        self._jobs: queue.SimpleQueue[tuple[Routes, RunMsg, dict[str, Any], float, bool]] = \
            queue.SimpleQueue()
        self._io_direct: DirectPath | None = None  # the I/O thread's; made there
        self._thread = threading.Thread(target=self._io_loop, name="interop-client", daemon=True)
        self._thread.start()

    # --- plumbing -------------------------------------------------------------------------

    def _io_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._dealer, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        self._io_direct = direct = DirectPath(self.ctx, self.security, self._max_bytes, poller,
                                              self._inflight, self._shared_inputs)
        try:
            while True:
                for sock, _ in poller.poll(int(self._epochs.ping_every_s * 1000)):
                    if sock is self._pull:
                        frames = self._pull.recv_multipart(copy=False)
                        if len(frames) == 1 and frames[0].bytes == b"":
                            return  # close() asked us to stop
                        if len(frames) == 1 and frames[0].bytes == b"job":
                            self._start_direct(*self._jobs.get_nowait())
                            continue
                        self._dealer.send_multipart(frames, copy=False)
                    elif sock is self._dealer:
                        self._on_reply(self._dealer.recv_multipart(copy=False))
                    else:  # a worker (its DEALER or its lane), for a direct run
                        self._direct_event(direct.read(sock))
                for rec, exc in direct.expire(time.monotonic()):
                    self._direct_event((rec, exc))
                self._sync.flush_releases(time.monotonic())  # after blocking runs
                ping = self._epochs.ping_due()
                if ping is not None:
                    self._dealer.send_multipart(encode(ping), copy=False)
        finally:
            direct.close()
            self._dealer.close(0)
            self._pull.close(0)
            with self._lock:
                for fut in self._futures.values():
                    if not fut.done():
                        fut.set_exception(InteropError("client closed"))

    def _start_direct(self, routes: Routes, msg: RunMsg, arrays: dict[str, Any],
                      timeout_s: float, copy: bool) -> None:
        """I/O thread: a submitted direct run."""
        assert self._io_direct is not None
        try:
            for event in [*self._io_direct.warm_up(routes),
                          *self._io_direct.await_returns(arrays)]:
                self._direct_event(event)
            msg.place = self._io_direct.start(routes, msg.run, msg.id, arrays, timeout_s,
                                              copy=copy).place or None
            self._dealer.send_multipart(encode(msg), copy=False)  # the record, after the data
        except Exception as exc:  # the run fails, never the I/O thread every run needs
            with self._lock:
                fut = self._futures.pop(msg.id, None)
            if fut is not None:
                fut.set_exception(exc)

    def _direct_event(self, event: tuple[DirectRun, InteropError | None] | None) -> None:
        """I/O thread: a direct run completed or failed."""
        if event is None or self._io_direct is None:
            return
        rec, exc = event
        self._io_direct.finish(rec, failed=exc is not None)
        self._epochs.answered(rec.msg_id)
        with self._lock:
            fut = self._futures.pop(rec.msg_id, None)
        if fut is None:
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(Envelope(msg=ReplyMsg(v=PROTOCOL_VERSION, id=new_id(),
                                                 reply_to=rec.msg_id, body=rec.body()),
                                    arrays=rec.outputs))

    def _on_reply(self, frames: list[Any]) -> None:
        try:
            env = decode(frames)
        except InteropError as exc:
            log.warning("undecodable reply: %s", exc)
            return
        msg = env.msg
        reply_to = getattr(msg, "reply_to", None)
        rec = self._io_direct.run_of(reply_to) if self._io_direct else None
        if rec is not None:  # the coordinator on a direct run: a failure, or relayed outputs
            if isinstance(msg, ErrorMsg):
                self._direct_event((rec, make_error(msg.code, msg.message, field=msg.field,
                                                    node=msg.node, edge=msg.edge,
                                                    worker=msg.worker)))
            elif self._io_direct is not None and (self._io_direct.relayed(rec, env.arrays)
                                                  or not env.arrays):
                self._direct_event((rec, None))
            return
        if self._epochs.is_ping(reply_to):
            if isinstance(msg, ReplyMsg) and isinstance(msg.body.get("epoch"), str):
                self._follow_runs(msg.body["epoch"])
            return
        self._epochs.answered(reply_to or "")
        with self._lock:
            fut = self._futures.pop(reply_to or "", None)
        if fut is None:
            if isinstance(msg, ErrorMsg):
                log.warning("error not tied to a request: %s", msg.message)
            return
        if isinstance(msg, ErrorMsg):
            fut.set_exception(make_error(msg.code, msg.message, field=msg.field, node=msg.node,
                                         edge=msg.edge, worker=msg.worker))
        elif isinstance(msg, ReplyMsg):
            fut.set_result(env)
        else:
            fut.set_exception(InteropError(f"unexpected {msg.kind} reply"))

    def _follow_runs(self, epoch: str) -> None:
        """I/O thread: the coordinator's epoch is ``epoch``; ask after runs of an older one."""
        for old_id, query in self._epochs.learned(epoch):
            with self._lock:
                fut = self._futures.pop(old_id, None)
                if fut is None:
                    continue
                self._futures[query.id] = fut
            self._dealer.send_multipart(encode(query), copy=False)

    def _learn_epoch(self) -> None:
        """Before the first run: which coordinator process is this? (one round trip)"""
        try:
            body = self.request(ControlMsg(**self._hdr(), action="ping"),
                                timeout_s=min(self.timeout_s, 5.0)).msg.body
        except InteropError:
            return  # not up yet: the first ping while runs are in flight will tell
        if isinstance(body.get("epoch"), str):
            self._epochs.learned(body["epoch"])

    def request_async(self, msg: Header, arrays: Mapping[str, Any] | None = None
                      ) -> Future[Envelope]:
        """Send a request; the Future resolves to the reply or raises its typed error."""
        if self._closed:
            raise InteropError("client is closed")
        fut: Future[Envelope] = Future()
        frames = encode(msg, arrays)
        with self._lock:
            self._futures[msg.id] = fut
        with self._push_lock:
            self._push.send_multipart(frames, copy=False)
        return fut

    def wait(self, fut: Future[Any], timeout_s: float | None = None, what: str = "reply") -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            return fut.result(timeout=timeout)
        except InteropError:
            raise  # the answer was an error (a RunTimeoutError is a FutureTimeout too)
        except FutureTimeout:
            with self._lock:
                for k, f in list(self._futures.items()):
                    if f is fut:
                        del self._futures[k]
            raise RunTimeoutError(f"no {what} from {self.address} within {timeout:.1f}s") from None

    def request(self, msg: Header, arrays: Mapping[str, Any] | None = None,
                timeout_s: float | None = None) -> Envelope:
        """Send and wait in this thread (no hand-off to the I/O thread when it is free)."""
        if self._closed:
            raise InteropError("client is closed")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        env = self._sync_request(msg, arrays, timeout)
        if env is not None:
            return env
        return self.wait(self.request_async(msg, arrays), timeout_s)

    def _sync_request(self, msg: Header, arrays: Mapping[str, Any] | None, timeout_s: float
                      ) -> Envelope | None:
        """On the caller's own channel, unless asynchronous requests are outstanding: then
        this one must queue behind them (a cancel must not overtake the run it cancels)."""
        with self._lock:
            if self._futures:
                return None
        return self._sync.request(msg, arrays, timeout_s, epoch=self._epochs.epoch)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sync.close()
        with self._push_lock:
            self._push.send(b"")
            self._thread.join(timeout=5)
            self._push.close(0)
        self._shared_inputs.close()  # arrays still held stay readable: their maps live on

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- graphs and runs --------------------------------------------------------------------------

    def _direct_routes(self, name: str) -> Routes | None:
        """The graph's direct routes (cached), or None: it runs through the coordinator."""
        if not self.direct:
            return None
        if name not in self._routes:
            try:
                body = self.request(QueryMsg(**self._hdr(), what="routes", graph=name)).msg.body
            except InteropError:
                return None  # not ready: the coordinator's RUN answer says why
            if len(self._routes) >= 1_000:
                self._routes.clear()
            self._routes[name] = Routes.from_body(body)
        return self._routes[name]

    def _direct_msg(self, name: str, routes: Routes, arrays: Mapping[str, Any],
                    timeout_s: float | None, run_id: str | None) -> RunMsg:
        DirectPath.check_inputs(routes, arrays)
        return RunMsg(**self._hdr(), graph=name, run=run_id or new_id(), timeout_s=timeout_s,
                      direct=True, routes=routes.routes_id,
                      input_bytes=sum(int(a.nbytes) for a in arrays.values()))

    def submit(self, graph: str | Graph | GraphSpec | Mapping[str, Any],
               inputs: Mapping[str, Any], *, timeout_s: float | None = None,
               run_id: str | None = None, copy: bool = True,
               _again: int = ROUTE_RETRIES) -> Future[RunResult]:
        """Start a run; the Future resolves to its RunResult. ``copy`` as for ``run``."""
        name = self._graph_name(graph)
        if self._epochs.epoch is None:
            self._learn_epoch()
        arrays = _arrays(inputs)
        routes = self._direct_routes(name)
        if routes is not None:
            msg = self._direct_msg(name, routes, arrays, timeout_s, run_id)
            raw: Future[Envelope] = Future()
            with self._lock:
                self._futures[msg.id] = raw
            self._epochs.started(msg.id, msg.run)
            self._jobs.put((routes, msg, arrays, timeout_s or self.default_run_timeout_s, copy))
            with self._push_lock:
                self._push.send(b"job")
        else:
            msg = RunMsg(**self._hdr(), graph=name, run=run_id or new_id(), timeout_s=timeout_s)
            self._epochs.started(msg.id, msg.run)
            raw = self.request_async(msg, arrays)
        out: Future[RunResult] = Future()

        def done(f: Future[Envelope]) -> None:
            try:
                env = f.result()
            except BaseException as exc:
                if routes is not None:
                    self._routes.pop(name, None)
                stale = isinstance(exc, InteropError) and (exc.field == "routes" or (
                    routes is not None and exc.field == "graph"))  # a worker dropped its plan
                if _again and stale:
                    # the graph was compiled again (a worker moved, a model changed): again,
                    # with fresh routes, from a thread of its own (this may be the I/O thread)
                    threading.Thread(target=lambda: _chain(self.submit(
                        name, inputs, timeout_s=timeout_s, copy=copy, _again=_again - 1), out),
                        daemon=True).start()
                    return
                out.set_exception(exc)
            else:
                out.set_result(RunResult(env.arrays, env.msg.body))
        raw.add_done_callback(done)
        return out

    def run(self, graph: str | Graph | GraphSpec | Mapping[str, Any], inputs: Mapping[str, Any],
            *, timeout_s: float | None = None, copy: bool = True) -> RunResult:
        """Run a graph once and return its outputs (sent and awaited in this thread).

        ``copy=False``: outputs that a worker on this host sent through shared memory come
        back as read-only views of its segment, not copies; the segment is released when
        the last view of it is dropped (client/views.py), within about a second. Hold
        them as briefly as you can: each one keeps a segment of the worker's pool, and
        once that is full, later outputs come the slow way, as frames via the
        coordinator."""
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        name = self._graph_name(graph)
        if self._epochs.epoch is None:
            self._learn_epoch()
        arrays = _arrays(inputs)
        for attempt in range(ROUTE_RETRIES + 1):
            routes = self._direct_routes(name)
            if routes is None:
                break
            msg = self._direct_msg(name, routes, arrays, timeout, None)
            with self._lock:
                queued = bool(self._futures)
            try:
                env = None if queued else self._sync.run_direct(
                    routes, msg, arrays, timeout + 1.0, epoch=self._epochs.epoch, copy=copy)
            except InteropError as exc:
                self._routes.pop(name, None)
                if exc.field in ("routes", "graph") and attempt < ROUTE_RETRIES:
                    # compiled again since we asked (a worker moved), or a worker dropped
                    # its plan (a model changed): ask again. A plan the coordinator has just
                    # reinstalled may still be on its way to the worker: give it a moment
                    if exc.field == "graph":
                        time.sleep(PLAN_GRACE_S)
                    continue
                raise
            if env is None:  # the channel is busy, or requests are queued: the I/O thread
                break
            return RunResult(env.arrays, env.msg.body)
        msg = RunMsg(**self._hdr(), graph=name, run=new_id(), timeout_s=timeout)
        env = self._sync_request(msg, arrays, timeout + 1.0)
        if env is None:  # the channel is busy, or requests are queued: the I/O thread
            return self.wait(self.submit(graph, inputs, timeout_s=timeout, copy=copy),
                             timeout + 1.0, "run result")
        return RunResult(env.arrays, env.msg.body)

    def shared_array(self, shape: int | tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """A writable array that direct runs send to workers on this host without a copy:
        fill it in place, pass it as an input, and do not write to it again until the run
        has returned (client/shared_inputs.py). Elsewhere, or while a worker still holds
        it, it is copied like any array. At most 1 GiB of them per client."""
        return self._shared_inputs.new((shape,) if isinstance(shape, int) else tuple(shape),
                                       dtype)

    async def run_async(self, graph: str | Graph | GraphSpec | Mapping[str, Any],
                        inputs: Mapping[str, Any], *, timeout_s: float | None = None,
                        copy: bool = True) -> RunResult:
        fut = self.submit(graph, inputs, timeout_s=timeout_s, copy=copy)
        timeout = (timeout_s if timeout_s is not None else self.timeout_s) + 1.0
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
