"""Prometheus metrics, structured logs, `interop status` and `interop graph`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np

from interop_runtime import Graph
from interop_runtime.client.cluster import free_tcp_address
from interop_runtime.client.testing import numpy_worker

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run([sys.executable, "-m", "interop_runtime", *args], capture_output=True,
                          text=True, timeout=60, check=True,
                          env={**os.environ, **(env or {})}).stdout


def test_metrics_logs_and_status(start_cluster) -> None:
    port = int(free_tcp_address().rsplit(":", 1)[1])
    cluster = start_cluster(numpy_worker("w1", "scale"), numpy_worker("w2", "fail"),
                            metrics_port=port, log_format="json")
    ok = Graph("ok").node("a", "w1", "scale").input("x", "a.x").output("y", "a.y")
    bad = Graph("bad").node("f", "w2", "fail").input("x", "f.x").output("y", "f.y")
    with cluster.client() as c:
        for _ in range(3):
            c.run(ok, {"x": np.ones(256, np.float32)})
        try:
            c.run(bad, {"x": np.ones(1, np.float32)})
        except Exception:
            pass
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'interop_runs_total{graph="ok",outcome="ok"} 3.0' in text
    assert 'interop_runs_total{graph="bad",outcome="function_failed"} 1.0' in text
    assert 'interop_node_compute_seconds_count{graph="ok",node="a",worker="w1"} 3.0' in text
    assert 'interop_worker_alive{device="cpu",plugin="numpy",worker="w1"} 1.0' in text
    assert 'interop_bytes_routed_total{path="client_to_workers"} 3076.0' in text
    assert "interop_run_latency_seconds_bucket" in text

    # one JSON object a line, tagged with the component
    lines = [json.loads(line) for line in cluster.log_tail("coordinator", 200).splitlines()
             if line.startswith("{")]
    assert any(rec["component"] == "coordinator" and "registered" in rec["msg"] for rec in lines)

    out = json.loads(cli("status", "-c", cluster.address, "--json", env=cluster.connection()))
    assert out["workers_alive"] == 2 and out["runs_ok"] == 3 and out["runs_failed"] == 1
    table = cli("status", "-c", cluster.address, env=cluster.connection())
    assert "w1" in table and "w2" in table


def test_metrics_tables_render_as_prometheus_text() -> None:
    """The coordinator counts in plain tables (coordinator/metrics.py) and prometheus_client
    renders them when scraped: cumulative buckets ending at +Inf, sums, removed series gone."""
    from prometheus_client import generate_latest

    from interop_runtime.coordinator.exposition import registry
    from interop_runtime.coordinator.metrics import CoordinatorMetrics

    m = CoordinatorMetrics()
    for seconds in (0.0002, 0.0002, 0.003, 100.0):  # the last one above every bucket
        m.run_latency.labels("g").observe(seconds)
    m.runs.labels("g", "ok").inc()
    m.runs.labels("gone", "ok").inc(2)
    m.runs.remove_where(0, "gone")
    m.runs_active.inc()
    m.runs_active.inc()
    m.runs_active.dec()
    text = generate_latest(registry(m)).decode()
    assert 'interop_run_latency_seconds_bucket{graph="g",le="0.0001"} 0.0' in text
    assert 'interop_run_latency_seconds_bucket{graph="g",le="0.00025"} 2.0' in text
    assert 'interop_run_latency_seconds_bucket{graph="g",le="0.005"} 3.0' in text
    assert 'interop_run_latency_seconds_bucket{graph="g",le="60.0"} 3.0' in text
    assert 'interop_run_latency_seconds_bucket{graph="g",le="+Inf"} 4.0' in text
    assert 'interop_run_latency_seconds_count{graph="g"} 4.0' in text
    assert 'interop_run_latency_seconds_sum{graph="g"} 100.0034' in text
    assert 'interop_runs_total{graph="g",outcome="ok"} 1.0' in text
    assert 'graph="gone"' not in text
    assert "interop_runs_active 1.0" in text


def test_graph_renders_as_mermaid_and_dot() -> None:
    pipeline = str(REPO / "examples" / "diamond" / "pipeline.yaml")
    mermaid = cli("graph", pipeline)
    assert mermaid.startswith("flowchart LR") and 'n_b -- "y → a" --> n_d' in mermaid
    dot = cli("graph", pipeline, "--format", "dot")
    assert dot.startswith('digraph "diamond"') and "n_a -> n_c" in dot
