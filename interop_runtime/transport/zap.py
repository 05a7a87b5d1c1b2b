"""The ZAP handler that applies the CURVE allow-list: pyzmq's ``zmq.auth.Authenticator``,
served from a plain thread.

pyzmq's own ThreadAuthenticator runs the same Authenticator on an asyncio loop, which makes
every daemon import asyncio and ssl (~4 MiB of an idle process, issue 10 goal 6) for no gain
here: a check against a directory of keys never waits on anything, so its coroutine finishes
the first time it is stepped.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Coroutine
from typing import Any

import zmq
from zmq.auth.base import Authenticator

log = logging.getLogger("interop.transport")


def _step_once(coro: Coroutine[Any, Any, None]) -> None:
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the ZAP check waited on something; only key directories are served")


def _answer(auth: Authenticator, request: list[bytes]) -> None:
    """Every request gets one reply, refusing on any failure: the REP socket accepts no
    next request until this one is answered, so one unanswered request would stall every
    CURVE handshake after it."""
    try:
        _step_once(auth.handle_zap_message(request))
    except Exception:
        log.exception("ZAP check failed; refusing the connection")
        if len(request) >= 2:
            auth._send_zap_reply(request[1], b"500", b"internal error")


class ZapHandler:
    """Binds ``inproc://zeromq.zap.01`` on ``ctx`` before ``start`` returns: a CURVE server
    socket made after that is never served without the check."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], domain: str, location: str) -> None:
        self.ctx, self.domain, self.location = ctx, domain, location
        self._stop_addr = f"inproc://interop-zap-stop-{secrets.token_hex(8)}"
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="interop-zap", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        stop = self.ctx.socket(zmq.PAIR)
        stop.connect(self._stop_addr)
        stop.send(b"stop")
        stop.close(linger=1000)
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        auth = Authenticator(self.ctx)
        try:  # the sockets live on this thread only
            auth.start()
            auth.configure_curve(domain=self.domain, location=self.location)
            pipe = self.ctx.socket(zmq.PAIR)
            pipe.bind(self._stop_addr)
        except BaseException as exc:  # told to start(), which raises it
            self._failed = exc
            self._ready.set()
            auth.stop()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(auth.zap_socket, zmq.POLLIN)
        poller.register(pipe, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if pipe in events:
                    return
                if auth.zap_socket in events:
                    _answer(auth, auth.zap_socket.recv_multipart())
        finally:
            pipe.close(linger=0)
            auth.stop()
