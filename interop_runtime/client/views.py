"""Zero-copy outputs: a run's shared-memory outputs handed to the caller as read-only views.

A worker on our host sends a large output as a handle to a segment of its pool. By default
the client copies it out and releases the segment at once; with ``copy=False`` it gives the
caller a read-only array over the segment itself and releases the segment only when that
array, and every view of it, is gone. The bytes stay valid for as long as the caller holds
them: a worker never writes a segment again until it is released, and one it takes back
unreleased (its 600 s lease ran out, the run was cancelled) leaves its pool unwritten
(transport/shm.py).

The release is queued when the garbage collector frees the array, on whatever thread that
is, and sent by the thread that owns the sockets the next time it runs or polls: with the
next run, or within about a second from the client's I/O thread.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from interop_runtime.transport.sockets import send_msg
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg

MAX_HANDLES_PER_RELEASE = 1024  # the spec's bound on CONTROL release

# (the socket the handle came on, its run, the handle as sent)
Dropped = tuple[zmq.Socket[bytes], str, dict[str, Any]]


class _Base:
    """The base of a tracked array: numpy keeps it alive while any view of it lives."""

    def __init__(self, view: np.ndarray, on_drop: Callable[[], None], readonly: bool) -> None:
        iface = dict(view.__array_interface__)
        iface["data"] = (iface["data"][0], readonly)
        self.__array_interface__ = iface
        self._view = view  # keeps the segment's map exported, so it is never unmapped
        weakref.finalize(self, on_drop)


def tracked(view: np.ndarray, on_drop: Callable[[], None], *, readonly: bool) -> np.ndarray:
    """An array over ``view``'s memory that calls ``on_drop`` (on whatever thread frees it)
    once it and every view of it are gone."""
    # .view(dtype): the interface spells extension dtypes (bfloat16) as raw bytes
    return np.asarray(_Base(view, on_drop, readonly)).view(view.dtype)


class ReleaseQueue:
    """Outputs the caller dropped, waiting for their release to be sent."""

    def __init__(self) -> None:
        self._dropped: deque[Dropped] = deque()  # appended from any thread

    @property
    def pending(self) -> int:
        return len(self._dropped)

    def hold(self, view: np.ndarray, sock: zmq.Socket[bytes], run: str,
             handle: dict[str, Any]) -> np.ndarray:
        """A read-only array over ``view`` that queues its release once dropped."""
        item = (sock, run, handle)  # read-only: the segment is the worker's
        return tracked(view, lambda: self._dropped.append(item), readonly=True)

    def flush(self) -> int:
        """Send every queued release, one message per socket and run; returns how many
        handles. Only the thread that owns the sockets may call it."""
        grouped: dict[tuple[zmq.Socket[bytes], str], list[dict[str, Any]]] = {}
        while self._dropped:
            sock, run, handle = self._dropped.popleft()
            grouped.setdefault((sock, run), []).append(handle)
        sent = 0
        for (sock, run), handles in grouped.items():
            if sock.closed:
                continue  # the client closed: the worker takes them back when they expire
            for i in range(0, len(handles), MAX_HANDLES_PER_RELEASE):
                part = handles[i:i + MAX_HANDLES_PER_RELEASE]
                try:  # never wait on a worker that stopped reading: its leases expire
                    send_msg(sock, ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client",
                                              action="release", run=run,
                                              args={"handles": part}), flags=zmq.NOBLOCK)
                except zmq.Again:
                    continue
                sent += len(part)
        return sent
