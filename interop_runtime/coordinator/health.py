"""The coordinator's HTTP port: ``/metrics`` (Prometheus text), ``/healthz`` (live),
``/readyz`` (ready), and 404 for any other path.

The state machine is single-threaded and stays so: the main loop publishes a small,
immutable ``Health`` snapshot every few ticks, and the HTTP thread only reads the last
one (an attribute read is atomic). A loop that stops publishing is reported as not live.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from interop_runtime.coordinator.metrics import CoordinatorMetrics

log = logging.getLogger("interop.coordinator")

STALE_AFTER_S = 10.0  # a loop that has not published for this long is not live
PUBLISH_EVERY_S = 0.25


@dataclass(frozen=True)
class Health:
    epoch: str
    store_writable: bool
    # registered graph -> the workers it needs that are not alive (empty: none missing)
    missing: dict[str, list[str]] = field(default_factory=dict)
    workers_alive: int = 0
    published: float = field(default_factory=time.monotonic)

    @property
    def ready(self) -> bool:
        return self.store_writable and not any(self.missing.values())


def store_writable(path: str) -> bool:
    """Whether the state file (and its folder, for the WAL) can be written."""
    if path in ("", ":memory:") or path.startswith("file::memory:"):
        return True
    folder = os.path.dirname(os.path.abspath(path))
    return os.access(folder, os.W_OK) and (not os.path.exists(path) or os.access(path, os.W_OK))


def snapshot(state: Any, store_path: str) -> Health:
    """Read on the main loop only: which registered graphs miss which live workers."""
    alive = {n for n, w in state.workers.items() if w.alive}
    alive |= {f"pool:{w.pool}" for w in state.workers.values() if w.alive and w.pool}
    missing = {name: sorted({n.target for n in spec.nodes.values()} - alive)
               for name, (_version, spec) in state.graph_specs.items()}
    return Health(epoch=state.epoch, store_writable=store_writable(store_path),
                  missing=missing, workers_alive=len(alive))


class HealthServer:
    """Serves the endpoints on ``addr:port`` (0 picks a free port) from a daemon thread."""

    def __init__(self, metrics: CoordinatorMetrics, port: int, addr: str = "127.0.0.1") -> None:
        # here, not at the top: a coordinator without the port loads neither (issue 10, goal 6)
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from interop_runtime.coordinator.exposition import registry

        self.registry = registry(metrics)
        self.health: Health | None = None
        self._last = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, ctype, body = server.answer(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # probes every second: no log line each
                pass

        self.httpd = ThreadingHTTPServer((addr, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="interop-http",
                                        daemon=True)
        self._thread.start()

    def publish(self, health: Health) -> None:
        self.health = health
        self._last = health.published

    def due(self) -> bool:
        return time.monotonic() - self._last >= PUBLISH_EVERY_S

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path not in ("/healthz", "/readyz"):
            return _json(404, {"status": "not_found", "path": path[:200],
                               "paths": ["/metrics", "/healthz", "/readyz"]})
        h = self.health
        age = time.monotonic() - h.published if h is not None else None
        if h is None or age is None or age > STALE_AFTER_S:
            return _json(503, {"status": "stalled", "why": "the coordinator's loop has not "
                               "reported in time", "age_s": None if age is None else round(age, 1)})
        if path == "/healthz":
            return _json(200, {"status": "ok", "epoch": h.epoch})
        missing = {g: ws for g, ws in sorted(h.missing.items()) if ws}
        body: dict[str, Any] = {"status": "ready" if h.ready else "not_ready", "epoch": h.epoch,
                                "store_writable": h.store_writable,
                                "workers_alive": h.workers_alive, "graphs": len(h.missing)}
        if not h.ready:
            body["missing_workers"] = sorted({w for ws in missing.values() for w in ws})
            body["graphs_missing_workers"] = dict(list(missing.items())[:100])
            whys = ([] if h.store_writable else ["the state store is not writable"]) + [
                f"graph {g!r} needs worker(s) {', '.join(ws)}, not alive"
                for g, ws in list(missing.items())[:10]]
            body["why"] = "; ".join(whys)
        return _json(200 if h.ready else 503, body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()
