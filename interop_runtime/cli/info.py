"""`interop plugins`, `workers`, `status` and `graph`: what is installed, running and wired."""

# no `from __future__ import annotations`: typer reads the option types at runtime
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    client_session,
    console,
)


def plugins() -> None:
    """List installed worker plugins."""
    from interop_runtime.worker.plugin import available_plugins

    table = Table("plugin", "entry point")
    for n, v in sorted(available_plugins().items()):
        table.add_row(n, v)
    console.print(table)


def workers(coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
            coordinator_key: CoordKeyOpt = None) -> None:
    """List the coordinator's workers and their functions."""
    with client_session(coordinator, key, coordinator_key, 5) as c:
        rows = c.workers()
    table = Table("worker", "plugin", "device", "alive", "endpoint", "functions")
    for w in rows:
        table.add_row(w["name"], w["plugin"], w["device"], "yes" if w["alive"] else "[red]no[/red]",
                      w["endpoint"], ", ".join(f["name"] for f in w["functions"]))
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
            with Live(_status_view(c), console=console, refresh_per_second=2) as live:
                try:
                    while True:
                        time.sleep(1)
                        live.update(_status_view(c))
                except KeyboardInterrupt:
                    pass
        else:
            console.print(_status_view(c))


def graph(pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (or a bare graph YAML).")],
          fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot.")] = "mermaid"
          ) -> None:
    """Render a pipeline's graph as Mermaid or Graphviz DOT."""
    from interop_runtime.graph.render import to_dot, to_mermaid
    from interop_runtime.wire.payloads import GraphSpec

    raw = yaml.safe_load(pipeline.read_text())
    spec = GraphSpec.model_validate(raw.get("graph", raw))
    print(to_dot(spec) if fmt == "dot" else to_mermaid(spec), end="")


def register(app: typer.Typer) -> None:
    for command in (plugins, workers, status, graph):
        app.command()(command)
