"""`interop logs` (a worker's log file, printed or followed) and `interop trace` (run
timelines as Chrome/Perfetto trace-event JSON)."""

# no `from __future__ import annotations`: typer reads the option types at runtime
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import typer

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    client_session,
    console,
    fail,
)
from interop_runtime.client.statedir import find_cluster_state, read_cluster_json

FOLLOW_POLL_S = 0.25


def _find_log(worker: str, log_dir: Path | None, cluster: str | None) -> tuple[Path | None,
                                                                                list[Path]]:
    """``DIR/<worker>.log`` with ``--log-dir``; else the log that the latest start of the
    cluster (``interop up``'s state folder) recorded, or the one in that folder."""
    tried: list[Path] = []
    if log_dir is not None:
        tried.append(log_dir / f"{worker}.log")
    else:
        folder = find_cluster_state(cluster)
        if folder is not None:
            logs = (read_cluster_json(folder) or {}).get("logs")
            if isinstance(logs, dict) and isinstance(logs.get(worker), str):
                tried.append(Path(logs[worker]))
            tried += [folder / f"{worker}.log", folder / "logs" / f"{worker}.log"]
    return next((p for p in tried if p.is_file()), None), tried


def _follow(path: Path, pos: int) -> None:
    """Print what is appended to ``path`` until Ctrl-C; a truncated file starts over."""
    while True:
        size = path.stat().st_size if path.exists() else 0
        if size < pos:
            pos = 0
        if size > pos:
            with path.open("rb") as f:
                f.seek(pos)
                chunk = f.read()
            pos += len(chunk)
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
        time.sleep(FOLLOW_POLL_S)


def logs(worker: Annotated[str, typer.Argument(help="The worker (or 'coordinator').")],
         follow: Annotated[bool, typer.Option("--follow", "-f",
                                              help="Keep printing what is appended.")] = False,
         log_dir: Annotated[Path | None, typer.Option(
             "--log-dir", help="The cluster's log folder (where `interop up` writes "
                               "NAME.log).")] = None,
         cluster: Annotated[str | None, typer.Option(
             "--cluster", help="The cluster's name (default: the latest started).")] = None,
         lines: Annotated[int, typer.Option("--lines", "-n", min=0,
                                            help="Print the last N lines (0: all).")] = 200,
         ) -> None:
    """Print a worker's log from the cluster's log folder; -f follows it."""
    path, tried = _find_log(worker, log_dir, cluster)
    if path is None:
        where = (f"looked in {', '.join(str(p) for p in tried)}" if tried else
                 "no cluster state folder found: pass --log-dir DIR")
        fail(f"no log for {worker!r}; {where}")
        return
    with path.open("rb") as f:
        data = f.read()
    text = data.decode("utf-8", "replace")
    if lines:
        text = "".join(deque(text.splitlines(keepends=True), maxlen=lines))
    sys.stdout.write(text)
    sys.stdout.flush()
    if follow:
        try:
            _follow(path, len(data))
        except KeyboardInterrupt:
            pass


def trace(runs: Annotated[list[str] | None, typer.Argument(help="Run ids.")] = None,
          out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSON.")]
          = Path("trace.json"),
          last: Annotated[int, typer.Option("--last", min=0,
                                            help="Also the N most recent runs.")] = 0,
          coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
          coordinator_key: CoordKeyOpt = None) -> None:
    """Write runs' timelines as Chrome/Perfetto trace-event JSON (open in ui.perfetto.dev)."""
    from interop_runtime.ops.timeline import fetch_timeline, recent_runs, trace_events

    wanted = list(runs or [])
    if not wanted and not last:
        fail("name one or more runs, or --last N")
    with client_session(coordinator, key, coordinator_key, 10) as c:
        if last:
            wanted += [r for r in recent_runs(c, last) if r not in wanted]
        if not wanted:
            fail("the coordinator knows of no finished runs yet")
        timelines: list[dict[str, Any]] = [fetch_timeline(c, r) for r in wanted]
    doc = trace_events(timelines)
    try:
        out.write_text(json.dumps(doc))
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    spans = sum(1 for e in doc["traceEvents"] if e["ph"] == "X")
    console.print(f"wrote {spans} spans of {len(timelines)} run(s) to {out}: open it in "
                  f"https://ui.perfetto.dev or chrome://tracing", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(logs)
    app.command()(trace)
