"""The dashboard as the coordinator's daemon sees it: a tick from its loop."""

from __future__ import annotations

import json
import logging
import time

from interop_runtime.coordinator.dashboard.server import DashboardServer, check_dashboard_allowed
from interop_runtime.coordinator.dashboard.snapshot import build_snapshot
from interop_runtime.coordinator.state import CoordinatorState

log = logging.getLogger("interop.coordinator")

PUBLISH_EVERY_S = 0.5
WATCHED_FOR_S = 10.0  # snapshots are built only this long after the last API request


class Dashboard:
    """``tick`` once per loop tick: publishes a snapshot while someone is looking."""

    def __init__(self, port: int, addr: str = "127.0.0.1", *, secure: bool) -> None:
        self.server = DashboardServer(port, addr,
                                      token_required=check_dashboard_allowed(addr, secure))
        self._last = 0.0

    @property
    def url(self) -> str:
        return self.server.url

    def tick(self, state: CoordinatorState) -> None:
        now = time.monotonic()
        watched = now - self.server.wanted < WATCHED_FOR_S
        if not watched or (now - self._last < PUBLISH_EVERY_S
                           and self.server.wanted <= self._last):
            return  # nobody looking, or the last snapshot is fresh and already asked for
        self._last = now
        try:
            body = json.dumps(build_snapshot(state, now), default=str,
                              separators=(",", ":")).encode()
        except Exception:  # the dashboard must never cost the coordinator its loop
            log.exception("could not build the dashboard snapshot")
            return
        self.server.publish(body)

    def close(self) -> None:
        self.server.close()
