"""`interop workers`, `runs` and `graphs`: what a coordinator holds, as rich tables or, with
``--json``, as JSON for scripts.

Dead workers stay listed, marked dead with the time since they were last heard from, until
the coordinator prunes their record (``Limits.dead_grace_s``: 60 s, or 30 heartbeats if
that is longer); a run waiting to retry on a dead worker keeps its record."""

# no `from __future__ import annotations`: typer reads the option types at runtime
import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    JsonOpt,
    KeyOpt,
    TimeoutOpt,
    client_session,
    console,
)

FAILED = ("failed", "cancelled", "interrupted")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _liveness(w: dict[str, Any]) -> str:
    if w.get("alive") and w.get("draining"):
        return "[yellow]draining[/yellow]"
    if w.get("alive"):
        return "[green]alive[/green]"
    return f"[red]dead[/red] (last seen {_ago(float(w.get('last_seen_s') or 0))})"


def workers(coordinator: CoordOpt = DEFAULT_ADDRESS, json_out: JsonOpt = False,
            key: KeyOpt = None, coordinator_key: CoordKeyOpt = None,
            timeout: TimeoutOpt = 5.0) -> None:
    """The coordinator's workers: plugin, device, alive or dead (and since when), functions."""
    with client_session(coordinator, key, coordinator_key, timeout) as c:
        rows = c.workers()
    if json_out:
        print(json.dumps({"workers": rows}))
        return
    pools = any(w.get("pool") for w in rows)  # the column only where replicas exist
    table = Table("worker", *(["pool"] if pools else []), "plugin", "device", "state",
                  "endpoint", "functions")
    for w in rows:
        table.add_row(escape(w["name"]), *([escape(w.get("pool") or "-")] if pools else []),
                      escape(w["plugin"]), escape(w["device"]), _liveness(w),
                      escape(w["endpoint"]), escape(", ".join(f["name"] for f in w["functions"])))
    console.print(table)
    dead = sum(not w["alive"] for w in rows)
    if dead:
        console.print(f"{dead} dead worker(s): the coordinator forgets a dead worker's record "
                      f"after a grace period (60 s by default)", soft_wrap=True)


def _when(unix_s: float | None, now: float) -> str:
    return _ago(now - unix_s) if unix_s else "-"


def _took(r: dict[str, Any]) -> str:
    if r.get("started") and r.get("finished"):
        return f"{(r['finished'] - r['started']) * 1000:.1f}"
    return "-"


def _error(err: dict[str, Any] | None) -> str:
    if not err:
        return ""
    where = ", ".join(f"{k}={err[k]}" for k in ("node", "worker", "edge", "field") if err.get(k))
    text = f"[{err.get('code', '?')}] {err.get('message', '')}" + (f" ({where})" if where else "")
    return text if len(text) <= 160 else text[:157] + "..."


def runs(coordinator: CoordOpt = DEFAULT_ADDRESS, json_out: JsonOpt = False,
         failed: Annotated[bool, typer.Option("--failed", help="Only runs that failed or "
                                                               "were cancelled.")] = False,
         limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Recent runs to "
                                                                       "show.")] = 20,
         key: KeyOpt = None, coordinator_key: CoordKeyOpt = None,
         timeout: TimeoutOpt = 5.0) -> None:
    """Runs in flight, then recent runs (newest first) with their state, duration and, for
    failures, the error code."""
    with client_session(coordinator, key, coordinator_key, timeout) as c:
        body = c.runs()
    active, recent = body.get("active", []), body.get("recent", [])
    if failed:
        recent = [r for r in recent if r.get("error") or r.get("state") in FAILED]
    recent = recent[:limit]
    if json_out:
        print(json.dumps({"active": active, "recent": recent}, default=str))
        return
    now = time.time()
    table = Table(title=f"{len(active)} in flight, {len(recent)} recent")
    table.add_column("run", overflow="fold")  # whole ids: they are what `interop trace` takes
    for name in ("graph", "state", "started", "ms", "error / outstanding nodes"):
        table.add_column(name)
    for r in active:
        nodes = ", ".join(f"{n}@{w}" for n, w in (r.get("outstanding") or {}).items())
        table.add_row(escape(r["run"]), escape(r["graph"]), "[yellow]running[/yellow]", "-",
                      "-", escape(nodes))
    for r in recent:
        state = str(r.get("state"))
        shown = f"[red]{escape(state)}[/red]" if r.get("error") else escape(state)
        table.add_row(escape(str(r["run"])), escape(str(r.get("graph"))), shown,
                      _when(r.get("started"), now), _took(r), escape(_error(r.get("error"))))
    console.print(table)


def graphs(coordinator: CoordOpt = DEFAULT_ADDRESS, json_out: JsonOpt = False,
           key: KeyOpt = None, coordinator_key: CoordKeyOpt = None,
           timeout: TimeoutOpt = 5.0) -> None:
    """Registered graphs: version, nodes, and whether they are ready to run (every worker
    they need is alive and has its plan)."""
    with client_session(coordinator, key, coordinator_key, timeout) as c:
        rows = c.graphs()
    if json_out:
        print(json.dumps({"graphs": rows}))
        return
    table = Table("graph", "version", "ready", "nodes")
    for g in rows:
        table.add_row(escape(g["name"]), str(g.get("version")),
                      "[green]yes[/green]" if g.get("ready") else "[red]no[/red]",
                      escape(", ".join(g.get("nodes", []))))
    console.print(table)


def register(app: typer.Typer) -> None:
    for command in (workers, runs, graphs):
        app.command()(command)
