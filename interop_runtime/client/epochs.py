"""Noticing a coordinator restart while runs are in flight.

Every coordinator process has a random epoch. While a client has runs in flight it pings
the coordinator once a second; when the epoch in the answer changes, the coordinator that
knew those runs is gone. Each such run is then asked for with ``QUERY result`` naming the
old epoch, and ends with its stored result or a ``coordinator_restarted`` error: never in
silence. No thread here: the client's I/O thread drives it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from interop_runtime.wire.codec import new_id
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg, QueryMsg

PING_EVERY_S = 1.0


@dataclass
class _InFlight:
    run: str
    epoch: str | None


class EpochWatch:
    def __init__(self, ping_every_s: float = PING_EVERY_S) -> None:
        self.ping_every_s = ping_every_s
        self.epoch: str | None = None
        self._runs: dict[str, _InFlight] = {}  # id of the RUN (or its follow-up) -> run
        self._pings: set[str] = set()
        self._last_ping = 0.0
        self._lock = threading.Lock()

    def started(self, msg_id: str, run: str) -> None:
        with self._lock:
            self._runs[msg_id] = _InFlight(run, self.epoch)

    def answered(self, msg_id: str) -> None:
        with self._lock:
            self._runs.pop(msg_id, None)

    def is_ping(self, msg_id: str | None) -> bool:
        with self._lock:
            if msg_id in self._pings:
                self._pings.discard(msg_id)
                return True
            return False

    def ping_due(self, now: float | None = None) -> ControlMsg | None:
        """A ping to send now, when runs are in flight and the last one is a second old."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._runs or now - self._last_ping < self.ping_every_s:
                return None
            self._last_ping = now
            if len(self._pings) > 16:  # the coordinator is down: do not pile them up
                self._pings.clear()
            msg = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", action="ping")
            self._pings.add(msg.id)
            return msg

    def learned(self, epoch: str) -> list[tuple[str, QueryMsg]]:
        """The coordinator's epoch is ``epoch``; returns ``(old id, QUERY result)`` for each
        run started under another epoch: the caller moves the run's future to the new id."""
        with self._lock:
            if self.epoch is None:
                for rec in self._runs.values():
                    rec.epoch = rec.epoch or epoch
            self.epoch = epoch
            follow: list[tuple[str, QueryMsg]] = []
            for old_id, rec in list(self._runs.items()):
                if rec.epoch is None or rec.epoch == epoch:
                    continue
                query = QueryMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", what="result",
                                 run=rec.run, epoch=rec.epoch)
                del self._runs[old_id]
                self._runs[query.id] = _InFlight(rec.run, epoch)
                follow.append((old_id, query))
            return follow
