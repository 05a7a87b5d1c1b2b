"""The live web dashboard the coordinator serves (``--dashboard-port``).

snapshot (one JSON view of the state: workers, graphs, runs, failures, per-node latency
and timelines, bounded; built on the coordinator's loop, then published as bytes),
server (HTTP in a thread: it only ever reads the last published snapshot, never the
state), board (the glue the daemon calls) and static/ (the page, its JS and CSS,
vendored: no CDN).

Imports: the coordinator's state and the wire. Nothing here touches a ZeroMQ socket.
"""

from interop_runtime.coordinator.dashboard.board import Dashboard
from interop_runtime.coordinator.dashboard.server import check_dashboard_allowed

__all__ = ["Dashboard", "check_dashboard_allowed"]
