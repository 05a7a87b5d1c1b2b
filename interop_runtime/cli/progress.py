"""What `interop up` and `interop launch` show of a local cluster: one line per worker while
it loads (state and elapsed time; a live table on a terminal, a line per change
elsewhere), then each exit and restart as it happens, and the lines a client needs."""

# no `from __future__ import annotations`: kept like the other CLI modules
import shlex
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from interop_runtime.client.supervise import (
    COORDINATOR_EXITED,
    EXITED,
    FAILED,
    REGISTERED,
    RESTARTING,
    STARTING,
    ClusterEvent,
)

_STYLE = {STARTING: "yellow", REGISTERED: "green", FAILED: "red", EXITED: "red",
          RESTARTING: "yellow", COORDINATOR_EXITED: "red"}


class ClusterView:
    """Turns ``ClusterEvent``s into terminal output; ``coordinator_died`` is set when the
    coordinator exits, for the command to stop on."""

    def __init__(self, console: Console, workers: list[str]) -> None:
        self.console = console
        now = time.monotonic()
        self.states: dict[str, tuple[str, float]] = {w: (STARTING, now) for w in workers}
        self._t0 = now
        self._live: Live | None = None
        self._loading = False
        self._lock = threading.Lock()
        self.coordinator_died = threading.Event()
        self.death: str | None = None
        self.changed = threading.Event()  # a worker's pid changed (cluster.json is stale)

    def __rich__(self) -> Table:
        table = Table("worker", "state", "elapsed", box=None, pad_edge=False)
        now = time.monotonic()
        for name, (state, since) in self.states.items():
            end = since if state in (REGISTERED, FAILED) else now
            table.add_row(name, f"[{_STYLE.get(state, '')}]{state}[/]", f"{end - self._t0:.1f} s")
        return table

    @contextmanager
    def loading(self) -> Iterator[None]:
        """While workers load: a live table on a terminal, plain lines otherwise."""
        self._loading = True
        try:
            if self.console.is_terminal and self.states:
                with Live(self, console=self.console, refresh_per_second=4) as live:
                    self._live = live
                    yield
            else:
                yield
        finally:
            self._live = None
            self._loading = False

    def handle(self, event: ClusterEvent) -> None:
        with self._lock:
            if event.worker is not None and event.worker in self.states:
                start = self.states[event.worker][1]
                keep = event.kind in (REGISTERED, FAILED) and self._loading
                self.states[event.worker] = (event.kind, time.monotonic() if keep else start)
            if event.kind == REGISTERED and not self._loading:
                self.changed.set()
            if event.kind == COORDINATOR_EXITED:
                self.death = event.message
                self.coordinator_died.set()
            if self._live is not None:
                return  # the live table shows it
            style = _STYLE.get(event.kind, "")
            timed = self._loading and event.kind != STARTING
            when = f" after {time.monotonic() - self._t0:.1f} s" if timed else ""
            self.console.print(f"[{style}]{escape(event.message)}[/]{when}", soft_wrap=True,
                               highlight=False)


def summary(console: Console, lc: Any, folder: Path) -> None:
    """The lines to act on once the cluster is up: address, logs, URLs, export lines."""
    spec = lc.spec.coordinator
    console.print(f"coordinator at [bold]{lc.address}[/bold]; workers: "
                  f"{', '.join(lc.workers) or '(none)'}; logs in {folder}", soft_wrap=True,
                  highlight=False)
    urls = lc.urls()  # what the coordinator bound (port 0 is any free port)
    if spec.metrics_port is not None:
        console.print(f"metrics at {urls.get('metrics', f'http://127.0.0.1:{spec.metrics_port}/metrics')}"
                      f" (health: /healthz, /readyz)", highlight=False)
    if spec.dashboard_port is not None:
        console.print(f"dashboard at {urls.get('dashboard', f'http://127.0.0.1:{spec.dashboard_port}/')}",
                      soft_wrap=True, highlight=False)
    console.print("connect with:", soft_wrap=True)
    for name, value in lc.connection().items():
        console.print(f"  export {name}={shlex.quote(value)}", soft_wrap=True, highlight=False)
    console.print(f"  (or: source {shlex.quote(str(folder / 'env.sh'))})", soft_wrap=True,
                  highlight=False)


def write_env(folder: Path, env: dict[str, str]) -> Path:
    path = folder / "env.sh"
    path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    return path
