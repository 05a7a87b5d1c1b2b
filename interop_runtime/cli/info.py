"""`interop plugins`, `status` and `graph`: what is installed, running and wired (the
inventory tables, `workers`, `runs` and `graphs`, are in inventory.py)."""

# no `from __future__ import annotations`: typer reads the option types at runtime
import json
import signal
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    client_session,
    console,
)
from interop_runtime.wire.errors import InteropError

WATCH_EVERY_S = 1.0


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


def plugins() -> None:
    """List installed worker plugins."""
    from interop_runtime.worker.plugin import available_plugins

    table = Table("plugin", "entry point")
    for n, v in sorted(available_plugins().items()):
        table.add_row(n, v)
    console.print(table)


def _status_view(c: Any) -> Any:
    from rich.console import Group

    body = c.status()
    workers = Table("worker", "plugin", "device", "alive", "last heartbeat", "functions",
                    title="workers")
    for w in c.workers():
        workers.add_row(w["name"], w["plugin"], w["device"],
                        "[green]yes[/green]" if w["alive"] else "[red]no[/red]",
                        f"{w['last_seen_s']:.1f}s ago", str(len(w["functions"])))
    runs = Table("run", "graph", "outstanding nodes", title="runs in flight")
    for r in c.runs()["active"][:20]:
        runs.add_row(r["run"], r["graph"], ", ".join(f"{n}@{w}" for n, w in r["outstanding"].items()))
    counters = " · ".join(f"{k}: {v}" for k, v in body.items())
    return Group(counters, workers, runs)


def status(coordinator: CoordOpt = DEFAULT_ADDRESS,
           json_out: Annotated[bool, typer.Option("--json", help="Counters as JSON.")] = False,
           watch: Annotated[bool, typer.Option("--watch", "-w", help="Live view.")] = False,
           key: KeyOpt = None, coordinator_key: CoordKeyOpt = None) -> None:
    """Workers, runs in flight and counters; --watch keeps the table live."""
    from rich.live import Live

    with client_session(coordinator, key, coordinator_key, 5) as c:
        if json_out:
            print(json.dumps({**c.status(), "workers": c.workers()}))
        elif watch:
            c.timeout_s = 2.0  # a watch notices a silent coordinator within a refresh or two
            stop = threading.Event()
            # Ctrl-C sets a flag the loop checks, rather than an exception that may land in
            # the middle of a request: the watch ends within one request's timeout, cleanly
            previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
            try:
                with Live(_status_view(c), console=console, refresh_per_second=2) as live:
                    _watch(c, live, stop)
            finally:
                signal.signal(signal.SIGINT, previous)
        else:
            console.print(_status_view(c))


def _watch(c: Any, live: Any, stop: threading.Event) -> None:
    """Refresh until Ctrl-C; a coordinator that stops answering is said once, in one line,
    and retried (it may be restarting), and its return is said too."""
    lost = False
    while not stop.wait(WATCH_EVERY_S):
        try:
            view = _status_view(c)
        except InteropError:
            if not lost:
                lost = True
                line = (f"[red]coordinator at {escape(c.address)} stopped answering[/red]; "
                        f"retrying (Ctrl-C stops)")
                live.console.print(line, soft_wrap=True)
                live.update(line)
            continue
        if lost:
            lost = False
            live.console.print(f"coordinator at {escape(c.address)} answers again",
                               soft_wrap=True)
        live.update(view)


def graph(pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (or a bare graph YAML).")],
          fmt: Annotated[GraphFormat, typer.Option("--format", "-f", case_sensitive=False,
                                                   help="mermaid or dot.")] = GraphFormat.mermaid
          ) -> None:
    """Render a pipeline's graph as Mermaid or Graphviz DOT."""
    from interop_runtime.graph.pipeline import read_yaml, validate_config
    from interop_runtime.graph.render import to_dot, to_mermaid
    from interop_runtime.wire.payloads import GraphSpec

    raw = read_yaml(pipeline)
    inner = isinstance(raw, dict) and "graph" in raw
    spec = validate_config(GraphSpec, raw["graph"] if inner else raw, pipeline,
                           "graph" if inner else "")
    print(to_dot(spec) if fmt == GraphFormat.dot else to_mermaid(spec), end="")


def register(app: typer.Typer) -> None:
    for command in (plugins, status, graph):
        app.command()(command)
