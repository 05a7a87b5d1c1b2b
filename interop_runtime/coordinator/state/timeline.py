"""Run timelines: each node's start and end on the workers' wall clocks (unix
microseconds), as ``QUERY runs`` with ``run`` answers them (SPEC section 9.1).

A node's own clock, not the moment its DONE reached us, says when it finished: a DONE
can wait in a queue behind others, and a direct run's upstream nodes send none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interop_runtime.wire.payloads import GraphSpec

NODE_KEYS = ("worker", "start_unix_us", "end_unix_us", "compute_us", "wait_us", "bytes_out")


def node_timing(t: Mapping[str, Any], started_unix_us: int) -> dict[str, Any]:
    """A node's timing for the RUN reply: ``done_us`` from the worker's own end time,
    relative to the run's start on our clock (clamped at 0: the clocks of two hosts may
    disagree a little)."""
    out = dict(t)
    end = out.get("end_unix_us")
    if isinstance(end, int) and started_unix_us:
        out["done_us"] = max(0, end - started_unix_us)
    return out


def timeline(entry: Mapping[str, Any], spec: GraphSpec | None) -> dict[str, Any]:
    """One run's record as a timeline: state, error, per-node spans and the graph's edges
    (node to node), from which a reader draws the transfer spans."""
    timings = entry.get("timings") or {}
    nodes = {n: {k: t[k] for k in NODE_KEYS if k in t} for n, t in timings.items()
             if isinstance(t, Mapping)}
    edges = sorted({(e.src.partition(".")[0], e.dst.partition(".")[0])
                    for e in spec.edges}) if spec is not None else []
    return {"run": entry.get("run"), "graph": entry.get("graph"), "state": entry.get("state"),
            "started": entry.get("started"), "finished": entry.get("finished"),
            "error": entry.get("error"), "nodes": nodes, "edges": [list(e) for e in edges]}
