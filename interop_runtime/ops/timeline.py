"""Run timelines as Chrome/Perfetto trace-event JSON (the format ``ray timeline`` writes).

Each worker is a process (``pid``) named by a ``process_name`` metadata event. Each run
gets two tracks on every worker it touched: its nodes (a ``wait`` span, first input to
last, then the node's compute span) and the transfers into them (from an upstream node's
end to this node's start). Times are the workers' wall clocks, in microseconds from the
earliest event (``otherData.t0_unix_us``); on one host the clocks agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from interop_runtime.wire.codec import new_id
from interop_runtime.wire.messages import PROTOCOL_VERSION, QueryMsg

Timeline = Mapping[str, Any]


def fetch_timeline(client: Any, run: str) -> dict[str, Any]:
    """One run's timeline from the coordinator (``QUERY runs`` with ``run``)."""
    msg = QueryMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", what="runs", run=run)
    timeline: dict[str, Any] = client.request(msg).msg.body["timeline"]
    return timeline


def recent_runs(client: Any, last: int) -> list[str]:
    """The ids of the ``last`` most recently started runs that have finished."""
    recent = client.runs().get("recent", [])
    return [r["run"] for r in recent[:max(0, last)]]


def _spans(t: Timeline) -> dict[str, tuple[int, int, dict[str, Any]]]:
    out = {}
    for node, n in (t.get("nodes") or {}).items():
        start, end = n.get("start_unix_us"), n.get("end_unix_us")
        if isinstance(start, int) and isinstance(end, int):
            out[node] = (start, max(start, end), n)
    return out


def trace_events(timelines: Sequence[Timeline]) -> dict[str, Any]:
    """The trace-event document for these runs' timelines."""
    spans = [_spans(t) for t in timelines]
    starts = [s - int(n.get("wait_us") or 0) for sp in spans for s, _, n in sp.values()]
    t0 = min(starts, default=0)
    pids: dict[str, int] = {}
    events: list[dict[str, Any]] = []

    def pid(worker: str) -> int:
        if worker not in pids:
            pids[worker] = len(pids) + 1
            events.append({"name": "process_name", "ph": "M", "pid": pids[worker], "tid": 0,
                           "args": {"name": f"worker {worker}"}})
        return pids[worker]

    named: set[tuple[int, int]] = set()

    def track(p: int, tid: int, name: str) -> int:
        if (p, tid) not in named:
            named.add((p, tid))
            events.append({"name": "thread_name", "ph": "M", "pid": p, "tid": tid,
                           "args": {"name": name}})
        return tid

    for i, (t, sp) in enumerate(zip(timelines, spans, strict=True)):
        run, graph = str(t.get("run")), str(t.get("graph"))
        label = run[:12]
        for node, (start, end, n) in sp.items():
            p = pid(str(n.get("worker", "?")))
            tid = track(p, 2 * i + 1, f"run {label}")
            args: dict[str, Any] = {"run": run, "graph": graph, "node": node}
            args.update({k: n[k] for k in ("compute_us", "wait_us", "bytes_out") if k in n})
            wait = int(n.get("wait_us") or 0)
            if wait > 0:
                events.append({"name": f"{node} wait", "cat": "wait", "ph": "X",
                               "ts": start - wait - t0, "dur": wait, "pid": p, "tid": tid,
                               "args": args})
            events.append({"name": node, "cat": "node", "ph": "X", "ts": start - t0,
                           "dur": end - start, "pid": p, "tid": tid, "args": args})
        for src, dst in _edges(t):
            if src not in sp or dst not in sp:
                continue
            end_src, (start_dst, _, n) = sp[src][1], sp[dst]
            p = pid(str(n.get("worker", "?")))
            tid = track(p, 2 * i + 2, f"run {label} transfers in")
            events.append({"name": f"{src} → {dst}", "cat": "transfer", "ph": "X",
                           "ts": end_src - t0, "dur": max(0, start_dst - end_src), "pid": p,
                           "tid": tid, "args": {"run": run, "graph": graph, "src": src,
                                                "dst": dst}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"t0_unix_us": t0, "runs": [str(t.get("run")) for t in timelines]}}


def _edges(t: Timeline) -> Iterable[tuple[str, str]]:
    for edge in t.get("edges") or []:
        if isinstance(edge, (list, tuple)) and len(edge) == 2 and edge[0] != edge[1]:
            yield str(edge[0]), str(edge[1])
