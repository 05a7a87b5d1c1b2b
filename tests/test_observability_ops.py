"""Operating a cluster: /healthz, /readyz and 404s on the metrics port, worker metrics
through heartbeats, structured log fields, `interop trace` and `interop logs`, on real
processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from interop_runtime import PROTOCOL_VERSION, ClusterSpec, Graph, LocalCluster
from interop_runtime.client.cluster import free_tcp_address
from interop_runtime.client.testing import numpy_worker
from interop_runtime.wire.codec import decode
from interop_runtime.wire.errors import InteropError

WAIT_S = 30.0  # generous: only to avoid a hang, never a timing assertion


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    port = int(free_tcp_address().rsplit(":", 1)[1])
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5, "metrics_port": port, "log_format": "json"},
        "workers": [numpy_worker("w1", "scale", "fail"), numpy_worker("w2", "add_const"),
                    numpy_worker("w3", "relu")]})
    with LocalCluster(spec, log_dir=str(tmp_path_factory.mktemp("logs"))) as c:
        yield c


def http(cluster: LocalCluster, path: str) -> tuple[int, str]:
    port = cluster.spec.coordinator.metrics_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interop_runtime", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def chain() -> Graph:
    return (Graph("chain").node("a", "w1", "scale").node("b", "w2", "add_const")
            .edge("a.y", "b.x").input("x", "a.x").output("y", "b.y"))


def metric(text: str, series: str) -> float:
    """The value of one series in Prometheus text; -1 when it is absent."""
    rows = [r for r in text.splitlines() if r.startswith(series + " ")]
    return float(rows[0].rsplit(" ", 1)[1]) if rows else -1.0


def json_lines(cluster: LocalCluster, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cluster.log_tail(name, 2000).splitlines()
            if line.startswith("{")]


def test_healthz_is_live_json_and_other_paths_are_404(cluster: LocalCluster) -> None:
    status, body = http(cluster, "/healthz")
    assert status == 200
    with cluster.client() as c:
        assert json.loads(body) == {"status": "ok", "epoch": c.status()["epoch"]}
    status, body = http(cluster, "/nope")
    assert status == 404 and json.loads(body)["status"] == "not_found"
    assert http(cluster, "/v2/health/ready")[0] == 404
    status, body = http(cluster, "/metrics")
    assert status == 200 and "interop_runs_active" in body


def test_worker_metrics_come_with_heartbeats(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        for _ in range(3):
            c.run(chain(), {"x": np.ones(64, np.float32)})
    wanted = ['interop_worker_calls_total{function="scale",worker="w1"}',
              'interop_worker_calls_total{function="add_const",worker="w2"}']
    deadline, text = time.monotonic() + WAIT_S, ""
    while time.monotonic() < deadline:  # each worker's next heartbeat brings its counts
        text = http(cluster, "/metrics")[1]
        if all(metric(text, w) >= 3 for w in wanted):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no {wanted} >= 3 in:\n{text}")
    assert 'interop_worker_compute_seconds_total{function="scale",worker="w1"}' in text
    assert 'interop_worker_queue_depth{worker="w1"}' in text
    assert 'interop_worker_rss_bytes{worker="w2"}' in text
    assert metric(text, 'interop_worker_bytes_in_total{worker="w2"}') > 0
    assert metric(text, 'interop_worker_bytes_out_total{worker="w1"}') > 0
    assert 'interop_runs_total{graph="chain",outcome="ok"}' in text  # old names kept


def test_a_failed_run_logs_run_and_code_as_fields(cluster: LocalCluster) -> None:
    bad = Graph("bad").node("f", "w1", "fail").input("x", "f.x").output("y", "f.y")
    with cluster.client() as c, pytest.raises(InteropError):
        c.run(bad, {"x": np.ones(4, np.float32)})
    with cluster.client() as c:
        run = next(r["run"] for r in c.runs()["recent"] if r["graph"] == "bad")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        failed = [r for r in json_lines(cluster, "coordinator") if r.get("run") == run]
        worker = [r for r in json_lines(cluster, "w1") if r.get("run") == run]
        if failed and worker:
            break
        time.sleep(0.2)
    assert failed[0]["code"] == "function_failed" and failed[0]["graph"] == "bad"
    assert failed[0]["node"] == "f" and failed[0]["worker"] == "w1"
    assert worker[0]["code"] == "function_failed" and worker[0]["node"] == "f"


@pytest.mark.parametrize("direct", [True, False])
def test_trace_covers_each_node_in_order(cluster: LocalCluster, tmp_path: Path,
                                         direct: bool) -> None:
    with cluster.client(direct=direct) as c:
        runs = [c.run(chain(), {"x": np.ones(1024, np.float32)}).run for _ in range(2)]
    out = tmp_path / "trace.json"
    done = cli("trace", *runs, "-o", str(out), "-c", cluster.address, env=cluster.connection())
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"worker w1", "worker w2"}
    for run in runs:
        spans = {e["name"]: e for e in events if e["ph"] == "X" and e["args"].get("run") == run}
        a, b = spans["a"], spans["b"]
        assert a["dur"] >= 0 and b["dur"] >= 0
        assert b["ts"] >= a["ts"] + a["dur"], (a, b)  # b starts after a ended
        assert a["pid"] != b["pid"]
        transfer = spans["a → b"]
        assert transfer["ts"] == a["ts"] + a["dur"] and transfer["pid"] == b["pid"]
    last = cli("trace", "--last", "1", "-o", str(out), "-c", cluster.address,
               env=cluster.connection())
    assert last.returncode == 0 and json.loads(out.read_text())["otherData"]["runs"]


def test_trace_of_an_unknown_run_is_one_line(cluster: LocalCluster, tmp_path: Path) -> None:
    done = cli("trace", "nosuchrun", "-o", str(tmp_path / "t.json"), "-c", cluster.address,
               env=cluster.connection())
    said = done.stdout + done.stderr
    assert done.returncode == 1 and "nosuchrun" in said and "Traceback" not in said


def test_logs_prints_a_workers_log(cluster: LocalCluster) -> None:
    done = cli("logs", "w1", "--log-dir", str(cluster.log_dir))
    assert done.returncode == 0 and "registered as w1" in done.stdout
    missing = cli("logs", "w9", "--log-dir", str(cluster.log_dir))
    said = missing.stdout + missing.stderr
    assert missing.returncode == 1 and str(cluster.log_dir / "w9.log") in said.replace("\n", "")


def test_a_hostile_stats_map_is_refused_whole() -> None:
    header = {"kind": "heartbeat", "v": PROTOCOL_VERSION, "id": "h1", "name": "w1", "session": "s",
              "stats": {"functions": {f"f{i}": {"calls": 1} for i in range(10_000)}}}
    with pytest.raises(InteropError):
        decode([msgpack.packb(header)])
    header["stats"] = {"functions": {"f": {"calls": -1}}}
    with pytest.raises(InteropError):
        decode([msgpack.packb(header)])


def test_readyz_names_a_dead_worker(cluster: LocalCluster) -> None:
    """Last: it kills w3."""
    with cluster.client() as c:
        c.register(Graph("needs_w3").node("r", "w3", "relu").input("x", "r.x")
                   .output("y", "r.y"))
        c.register(chain())
    status, body = http(cluster, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready", body
    cluster.kill_worker("w3")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status, body = http(cluster, "/readyz")
        if status == 503:
            break
        time.sleep(0.2)
    answer = json.loads(body)
    assert status == 503 and answer["missing_workers"] == ["w3"], body
    assert answer["graphs_missing_workers"] == {"needs_w3": ["w3"]}
    assert http(cluster, "/healthz")[0] == 200  # not ready, still live
