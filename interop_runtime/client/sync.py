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


class SyncChannel:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], address: str, *,
                 security: Security | None, max_message_bytes: int | None) -> None:
        self._connect = lambda: connect_dealer(ctx, address, security=security,
                                               max_message_bytes=max_message_bytes)
        self._sock: zmq.Socket[bytes] | None = None
        self._lock = threading.Lock()
        self.address = address

    def request(self, msg: Header, arrays: Mapping[str, Any] | None, timeout_s: float, *,
                epoch: str | None = None) -> Envelope | None:
        """The reply to ``msg``, or None when another thread holds the channel (use the
        asynchronous path then). Raises the reply's typed error, or RunTimeoutError."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._sock is None:
                self._sock = self._connect()
            self._sock.send_multipart(encode(msg, arrays), copy=False)
            return self._wait(msg, timeout_s, epoch if isinstance(msg, RunMsg) else None)
        finally:
            self._lock.release()

    def _wait(self, msg: Header, timeout_s: float, epoch: str | None) -> Envelope:
        assert self._sock is not None
        deadline = time.monotonic() + timeout_s
        waiting_for, ping_id, next_ping = msg.id, "", time.monotonic() + PING_EVERY_S
        while (left := deadline - time.monotonic()) > 0:
            if not self._sock.poll(int(min(left, max(0.0, next_ping - time.monotonic())) * 1000)
                                   + 1):
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
            if isinstance(env.msg, ErrorMsg):
                m = env.msg
                raise make_error(m.code, m.message, field=m.field, node=m.node, edge=m.edge,
                                 worker=m.worker)
            return env
        raise RunTimeoutError(f"no reply from {self.address} within {timeout_s:.1f}s")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None
