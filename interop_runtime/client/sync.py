"""Synchronous requests in the caller's own thread, on a second DEALER.

A blocking ``Client.run`` or ``Client.request`` otherwise hands its frames to the I/O
thread and waits on a Future: two thread hand-offs and wake-ups per round trip. Here the
caller sends and polls itself. One thread at a time: a caller that finds the channel busy
goes the asynchronous way. While it waits for a run, it pings the coordinator once a second,
so a restart still ends the run with a typed answer (client/epochs.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import zmq

from interop_runtime.client.direct import DirectPath, DirectRun, Inflight, Routes
from interop_runtime.client.shared_inputs import SharedArrays
from interop_runtime.transport.security import Security
from interop_runtime.transport.sockets import connect_dealer
from interop_runtime.wire.codec import Envelope, decode, encode, new_id
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

PING_EVERY_S = 1.0
FLUSH_EVERY_S = 0.05  # the I/O thread's look at an idle blocking channel


class SyncChannel:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], address: str, *,
                 security: Security | None, max_message_bytes: int | None,
                 inflight: Inflight | None = None,
                 shared_inputs: SharedArrays | None = None) -> None:
        self._connect = lambda: connect_dealer(ctx, address, security=security,
                                               max_message_bytes=max_message_bytes)
        self._sock: zmq.Socket[bytes] | None = None
        self._lock = threading.Lock()
        self._next_flush = 0.0
        self.address = address
        self._poller = zmq.Poller()
        self._direct = DirectPath(ctx, security, max_message_bytes, self._poller, inflight,
                                  shared_inputs)

    def run_direct(self, routes: Routes, msg: RunMsg, arrays: Mapping[str, Any],
                   timeout_s: float, *, epoch: str | None, copy: bool = True
                   ) -> Envelope | None:
        """A direct run from this thread: RUN to the coordinator, inputs to the workers,
        outputs from them. None when another thread holds the channel."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            sock = self._socket()
            self._direct.warm_up(routes)
            self._direct.drain()
            self._direct.await_returns(arrays)
            # the data first: the record goes out right after, off the data's path (the
            # coordinator keeps completions that arrive before the record)
            rec = self._direct.start(routes, msg.run, msg.id, arrays, timeout_s, copy=copy)
            msg.place = rec.place or None
            sock.send_multipart(encode(msg), copy=False)
            try:
                return self._wait(msg, timeout_s, epoch, rec)
            except BaseException:
                self._direct.finish(rec, failed=True)
                raise
        finally:
            self._lock.release()

    def flush_releases(self, now: float) -> None:
        """Send the releases of zero-copy outputs dropped since this channel's last run,
        and read the releases workers sent back, unless a caller is using it (then its run
        does). For the I/O thread, which calls it as it loops (at least once a second), so
        an idle client gives segments back and gets its shared arrays back too."""
        if now < self._next_flush or not self._direct.sockets:
            return
        self._next_flush = now + FLUSH_EVERY_S
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._direct.drain()  # sends the queued releases first
        finally:
            self._lock.release()

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            self._sock = self._connect()
            self._poller.register(self._sock, zmq.POLLIN)
        return self._sock

    def request(self, msg: Header, arrays: Mapping[str, Any] | None, timeout_s: float, *,
                epoch: str | None = None) -> Envelope | None:
        """The reply to ``msg``, or None when another thread holds the channel (use the
        asynchronous path then). Raises the reply's typed error, or RunTimeoutError."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._socket().send_multipart(encode(msg, arrays), copy=False)
            return self._wait(msg, timeout_s, epoch if isinstance(msg, RunMsg) else None)
        finally:
            self._lock.release()

    def _wait(self, msg: Header, timeout_s: float, epoch: str | None,
              rec: DirectRun | None = None) -> Envelope:
        assert self._sock is not None
        deadline = time.monotonic() + timeout_s
        waiting_for, ping_id, next_ping = msg.id, "", time.monotonic() + PING_EVERY_S
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(self._poller.poll(
                int(min(left, max(0.0, next_ping - time.monotonic())) * 1000) + 1))
            for wsock in [s for s in ready if s is not self._sock]:  # workers (direct runs)
                event = self._direct.read(wsock)
                if rec is not None and event is not None and event[0] is rec:
                    return self._direct_done(rec, event[1])
            if self._sock not in ready:
                if epoch is not None and time.monotonic() >= next_ping:
                    ping = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client",
                                      action="ping")
                    ping_id, next_ping = ping.id, time.monotonic() + PING_EVERY_S
                    self._sock.send_multipart(encode(ping), copy=False)
                continue
            try:
                env = decode(self._sock.recv_multipart(copy=False))
            except InteropError:
                continue
            reply_to = getattr(env.msg, "reply_to", None)
            if reply_to == ping_id and isinstance(env.msg, ReplyMsg):
                now_epoch = env.msg.body.get("epoch")
                if isinstance(now_epoch, str) and now_epoch != epoch \
                        and isinstance(msg, RunMsg):
                    # the coordinator that had our run is gone: ask the new one about it
                    query = QueryMsg(v=PROTOCOL_VERSION, id=new_id(), src="client",
                                     what="result", run=msg.run, epoch=epoch)
                    self._sock.send_multipart(encode(query), copy=False)
                    waiting_for, epoch = query.id, None
                continue
            if reply_to != waiting_for:
                continue  # a late answer to an earlier request that timed out
            if rec is not None and isinstance(env.msg, ReplyMsg):
                if self._direct.relayed(rec, env.arrays) or not env.arrays:
                    return self._direct_done(rec, None)
                continue
            if isinstance(env.msg, ErrorMsg):
                m = env.msg
                raise make_error(m.code, m.message, field=m.field, node=m.node, edge=m.edge,
                                 worker=m.worker)
            return env
        raise RunTimeoutError(f"no reply from {self.address} within {timeout_s:.1f}s")

    def _direct_done(self, rec: DirectRun, error: InteropError | None) -> Envelope:
        self._direct.finish(rec, failed=error is not None)
        if error is not None:
            raise error
        body = rec.body()
        return Envelope(msg=ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), reply_to=rec.msg_id,
                                     body=body), arrays=rec.outputs)

    def close(self) -> None:
        # a request interrupted mid-way (Ctrl-C) must not make closing wait forever
        held = self._lock.acquire(timeout=2.0)
        try:
            self._direct.close()
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None
        finally:
            if held:
                self._lock.release()
