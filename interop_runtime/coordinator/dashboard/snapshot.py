"""One JSON view of the coordinator's state for the dashboard, built on the main loop.

What a peer chose (names, messages) is cut to a bounded length, and every list is
bounded, so a snapshot stays small however many peers there are. Keys, sessions, shared
memory handles, node args and tensors are never read into it.
"""

from __future__ import annotations

import time
from typing import Any

from interop_runtime.coordinator.state import CoordinatorState
from interop_runtime.coordinator.state.records import WorkerRecord

MAX_TEXT = 256
MAX_MESSAGE = 400
MAX_ROWS = 500  # workers, runs in flight, latency rows
MAX_GRAPHS = 200
MAX_NODES = 200  # per graph drawn
MAX_RECENT = 50
MAX_FAILURES = 20


def _cut(value: Any, limit: int = MAX_TEXT) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_snapshot(state: CoordinatorState, now: float | None = None) -> dict[str, Any]:
    now = time.monotonic() if now is None else now
    recent = _recent(state)
    stats = state.metrics.worker_stats.workers()
    return {
        "generated_unix": time.time(),
        "counts": {"workers_alive": sum(w.alive for w in state.workers.values()),
                   "workers_dead": sum(not w.alive for w in state.workers.values()),
                   "graphs": len(state.graph_specs), "runs_active": len(state.runs),
                   "runs_ok": state.finished_ok, "runs_failed": state.finished_failed},
        "workers": [_worker(w, stats.get(w.name), now)
                    for w in list(state.workers.values())[:MAX_ROWS]],
        "graphs": [_graph(name, version, spec, name in state.graphs)
                   for name, (version, spec) in list(state.graph_specs.items())[:MAX_GRAPHS]],
        "active": [{"run": _cut(r.run), "graph": _cut(r.graph), "age_s": round(now - r.started, 3),
                    "outstanding": [{"node": _cut(n), "worker": _cut(w)}
                                    for n, w in list(r.outstanding.items())[:MAX_NODES]],
                    "waiting_for": _cut(r.waiting_for) if r.waiting_for else None}
                   for r in list(state.runs.values())[:MAX_ROWS]],
        "recent": [{k: v for k, v in r.items() if k != "timeline"} for r in recent],
        "failures": [r for r in recent if r["state"] != "done"][:MAX_FAILURES],
        "latency": _latency(state),
        "timelines": {r["run"]: r["timeline"] for r in recent if r.get("timeline")},
    }


def _worker(w: WorkerRecord, raw_stats: Any, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {"name": _cut(w.name), "plugin": _cut(w.plugin),
                           "device": _cut(w.device), "alive": w.alive, "pid": w.pid,
                           "last_seen_s": round(now - w.last_seen, 3),
                           "functions": [_cut(f) for f in list(w.functions)[:MAX_NODES]]}
    stats = _stats(raw_stats)
    if stats:
        out["stats"] = stats
    return out


def _stats(raw: Any) -> dict[str, int]:
    """Load and memory from the worker's last heartbeat, when it sent any."""
    if raw is None:
        return {}
    data = raw.model_dump() if hasattr(raw, "model_dump") else raw
    if not isinstance(data, dict):
        return {}
    out = {k: v for k in ("pending", "rss_bytes", "device_bytes", "bytes_in", "bytes_out")
           if isinstance(v := data.get(k), int)}
    functions = data.get("functions")
    if isinstance(functions, dict):
        fs = [f for f in functions.values() if isinstance(f, dict)]
        out["calls"] = sum(int(f.get("calls") or 0) for f in fs)
        out["errors"] = sum(int(f.get("errors") or 0) for f in fs)
    return out


def _graph(name: str, version: int, spec: Any, ready: bool) -> dict[str, Any]:
    nodes = list(spec.nodes.items())[:MAX_NODES]
    kept = {n for n, _ in nodes}
    return {"name": _cut(name), "version": version, "ready": ready,
            "truncated": len(spec.nodes) > MAX_NODES,
            "nodes": [{"name": _cut(n), "worker": _cut(s.target), "function": _cut(s.function)}
                      for n, s in nodes],
            "edges": [{"src": _cut(e.src), "dst": _cut(e.dst)} for e in spec.edges
                      if e.src.partition(".")[0] in kept and e.dst.partition(".")[0] in kept],
            "inputs": {_cut(k): [_cut(v) for v in vs[:MAX_NODES]]
                       for k, vs in list(spec.inputs.items())[:MAX_NODES]},
            "outputs": {_cut(k): _cut(v) for k, v in list(spec.outputs.items())[:MAX_NODES]}}


def _recent(state: CoordinatorState) -> list[dict[str, Any]]:
    """Finished runs, newest first: the ones in memory and the detached ones in the store."""
    rows = sorted([*state.recent, *state.store.runs(MAX_RECENT)],
                  key=lambda r: r.get("started") or 0, reverse=True)[:MAX_RECENT]
    out = []
    for r in rows:
        run = str(r.get("run"))
        timings = r.get("timings")  # in memory only: detached runs' are in the store
        started = r.get("started")
        finished = r.get("finished")
        error = r.get("error") if isinstance(r.get("error"), dict) else None
        out.append({"run": _cut(run), "graph": _cut(r.get("graph", "")),
                    "state": _cut(r.get("state", "")), "started_unix": started,
                    "elapsed_s": round(finished - started, 6)
                    if isinstance(started, float) and isinstance(finished, float) else None,
                    "error": _error(error) if error else None,
                    "timeline": _timeline(timings, started if isinstance(started, float) else 0.0)
                    if isinstance(timings, dict) else None})
    return out


def _latency(state: CoordinatorState) -> list[dict[str, Any]]:
    """Compute time per (graph, node) over the runs the state remembers (bounded by
    RECENT_RUNS): count, mean, p50, p95 and max, for graphs still registered."""
    samples: dict[tuple[str, str], tuple[str, list[int]]] = {}
    for r in state.recent:
        graph, timings = r.get("graph"), r.get("timings")
        if graph not in state.graph_specs or not isinstance(timings, dict):
            continue
        for node, t in timings.items():
            us = _int(t.get("compute_us")) if isinstance(t, dict) else None
            if us is not None and (len(samples) < MAX_ROWS or (graph, node) in samples):
                samples.setdefault((graph, node), (str(t.get("worker", "")), []))[1].append(us)
    rows = []
    for (graph, node), (worker, values) in sorted(samples.items()):
        values.sort()
        rows.append({"graph": _cut(graph), "node": _cut(node), "worker": _cut(worker),
                     "count": len(values), "mean_us": sum(values) // len(values),
                     "p50_us": values[len(values) // 2],
                     "p95_us": values[min(len(values) - 1, len(values) * 95 // 100)],
                     "max_us": values[-1]})
    return rows


def _error(error: dict[str, Any]) -> dict[str, str]:
    return {k: _cut(error[k], MAX_MESSAGE if k == "message" else MAX_TEXT)
            for k in ("code", "message", "node", "worker") if error.get(k) is not None}


def _timeline(timings: dict[str, Any], started_unix: float) -> list[dict[str, Any]]:
    """One bar per node, in microseconds from the run's first start. Workers' own clock
    (start_unix_us, end_unix_us) when the timings carry it; else when the coordinator
    heard of the node (done_us after the run started), minus its compute time."""
    base = int(started_unix * 1e6)
    spans: list[tuple[int, int, dict[str, Any]]] = []
    for node, t in list(timings.items())[:MAX_NODES]:
        if not isinstance(t, dict):
            continue
        compute = _int(t.get("compute_us"))
        start, end = _int(t.get("start_unix_us")), _int(t.get("end_unix_us"))
        if start is not None and end is not None:
            clock = "worker"
        elif (done := _int(t.get("done_us"))) is not None:
            start, end, clock = base + done - (compute or 0), base + done, "coordinator"
        else:
            continue
        spans.append((start, end, {"node": _cut(node), "worker": _cut(t.get("worker", "")),
                                   "compute_us": compute, "wait_us": _int(t.get("wait_us")),
                                   "clock": clock}))
    if not spans:
        return []
    origin = min(start for start, _, _ in spans)
    bars = [{**bar, "start_us": start - origin, "end_us": end - origin}
            for start, end, bar in spans]
    return sorted(bars, key=lambda b: (b["start_us"], b["node"]))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
