"""Dynamic batching (README "Dynamic batching"): the batcher on its own, then real workers
(NumPy and torch) stacking concurrent runs into one call, failures kept per run, and a
function without a dynamic batch dimension refused at start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from interop_runtime import ClusterSpec, FunctionFailedError, Graph, LocalCluster
from interop_runtime.client.cluster import free_tcp_address
from interop_runtime.wire.messages import BatchingSpec, FunctionSpec, TensorSpec
from interop_runtime.wire.payloads import PlanNode
from interop_runtime.worker.batching import MAX_GROUPS, Batcher, batching_policies
from interop_runtime.worker.metrics import WorkerMetrics
from interop_runtime.worker.state import Ready

WAIT_S = 60.0  # generous: only to avoid a hang, never a timing assertion
RUNS = 16

# the functions the workers host, from a module written for this test
OPS = '''
import time
import numpy as np
from interop_runtime.worker.numpy_plugin import numpy_function

ROWS4 = {"dtype": "float32", "shape": [None, 4]}

@numpy_function(inputs=[{"name": "x", **ROWS4}], outputs=[{"name": "y", **ROWS4}])
def slow_double(x, log="", seconds=0.05):
    """y = 2 x after a pause (so that runs overlap); NaN in x raises; logs each call's rows."""
    if log:
        with open(log, "a") as f:
            f.write(f"{x.shape[0]}\\n")
    time.sleep(seconds)
    if np.isnan(x).any():
        raise ValueError("x holds NaN")
    return x * np.float32(2)

@numpy_function(inputs=[{"name": "x", "dtype": "float32", "shape": [4]}],
                outputs=[{"name": "y", "dtype": "float32", "shape": [4]}])
def fixed(x):
    return x
'''


# --- the batcher, without sockets --------------------------------------------------------

def ready(run: str, x: np.ndarray, **args: Any) -> Ready:
    plan = PlanNode(node="n", function="f", inputs=["x"], args=args)
    return Ready("g", run, plan, {"x": x}, 0.0)


def rows(n: int, value: float = 0.0, width: int = 4) -> np.ndarray:
    return np.full((n, width), value, np.float32)


def test_a_batch_flushes_when_full_and_splits_back_by_rows() -> None:
    b = Batcher("f", BatchingSpec(max_batch=4, max_delay_ms=50))
    assert b.add(ready("r1", rows(1, 1)), 0.0) == []
    assert b.add(ready("r2", rows(2, 2)), 0.001) == []
    assert b.deadline() == pytest.approx(0.05)
    [batch] = b.add(ready("r3", rows(1, 3)), 0.002)  # 4 rows: full
    assert len(b) == 0 and b.deadline() is None
    stacked = batch.stack()["x"]
    assert stacked[:, 0].tolist() == [1, 2, 2, 3]
    parts = batch.split({"y": stacked * 10})
    assert [p["y"][:, 0].tolist() for p in parts] == [[10], [20, 20], [30]]
    with pytest.raises(ValueError, match="rows"):
        batch.split({"y": stacked[:3]})  # a call that lost a row cannot be split back


def test_a_batch_is_due_after_max_delay_and_the_poll_wakes_for_it() -> None:
    b = Batcher("f", BatchingSpec(max_batch=32, max_delay_ms=20))
    b.add(ready("r1", rows(1)), 10.0)
    b.add(ready("r2", rows(1)), 10.005)
    assert b.due(10.019) == []
    assert b.wake_ms(200, 10.010) == 10
    [batch] = b.due(10.020)
    assert [i.ready.run for i in batch.items] == ["r1", "r2"]
    live, gone = batch.settle(10.030, {"r2"})  # r2 was cancelled while it waited
    assert [i.ready.run for i in live.items] == ["r1"] and [r.run for r in gone] == ["r2"]
    assert live.items[0].ready.wait_s == pytest.approx(0.030)


def test_only_stackable_items_share_a_batch() -> None:
    b = Batcher("f", BatchingSpec(max_batch=8, max_delay_ms=10, dim=0))
    b.add(ready("a", rows(1)), 0.0)
    b.add(ready("b", rows(1, width=5)), 0.0)  # other width
    b.add(ready("c", rows(1).astype(np.float64)), 0.0)  # other dtype
    b.add(ready("d", rows(1), scale=2), 0.0)  # other node args
    b.add(ready("e", rows(1)), 0.0)  # with a
    assert sorted(len(x.items) for x in b.due(1.0)) == [1, 1, 1, 2]
    [alone] = b.add(ready("s", np.float32(3)), 0.0)  # no batch dimension: runs at once
    assert len(alone.items) == 1
    [big] = b.add(ready("big", rows(9)), 0.0)  # fills a batch alone
    assert big.items[0].rows == 9
    # bounded: distinct shapes beyond MAX_GROUPS push the oldest batch out
    out = [x for w in range(MAX_GROUPS + 1) for x in b.add(ready(f"w{w}", rows(1, width=w + 1)),
                                                           0.0)]
    assert len(out) == 1 and len(b.groups) == MAX_GROUPS


def test_batching_along_another_dim_keeps_rows_apart() -> None:
    b = Batcher("f", BatchingSpec(max_batch=3, max_delay_ms=10, dim=1))
    b.add(ready("a", np.arange(6, dtype=np.float32).reshape(2, 3, 1)[:, :1]), 0.0)
    [batch] = b.add(ready("b", np.ones((2, 2, 1), np.float32)), 0.0)
    stacked = batch.stack()["x"]
    assert stacked.shape == (2, 3, 1)
    a, c = batch.split({"y": stacked})
    assert a["y"].shape == (2, 1, 1) and c["y"].shape == (2, 2, 1)
    assert a["y"].flags.c_contiguous and c["y"].flags.c_contiguous


def spec(name: str, shape: list[int | None] | None) -> FunctionSpec:
    t = [TensorSpec(name="x", dtype="float32", shape=shape)]
    return FunctionSpec(name=name, inputs=t, outputs=[TensorSpec(name="y", shape=shape)])


@pytest.mark.parametrize(("config", "message"), [
    ({"nope": {"max_batch": 4}}, "batching.nope: the worker has no function 'nope'"),
    ({"f": {"max_batch": 5000}}, "batching.f.max_batch: Expected `int` <= 4096"),
    ({"f": {"max_batch": 4, "max_delay_ms": 2000}}, "batching.f.max_delay_ms"),
    ({"f": {"max_batch": 4, "size": 1}}, "batching.f: unknown key(s) size"),
    ({"f": {}}, "batching.f.max_batch: missing key"),
    ({"fixed": {"max_batch": 4}}, "batching.fixed: input 'x' has shape (4, ?), without a "
                                  "dynamic size at dim 0"),
    ({"anyrank": {"max_batch": 4}}, "batching.anyrank: input 'x' declares no shape"),
    ({"f": {"max_batch": 4, "dim": 2}}, "without a dynamic size at dim 2"),
    ({"f": {"max_batch": 4}, "g": {"max_batch": 4}}, "g changes the parameters"),
])
def test_bad_batching_config_is_one_line_naming_the_key(config: dict[str, Any], message: str
                                                        ) -> None:
    functions = {f.name: f for f in [spec("f", [None, 4]), spec("g", [None]),
                                      spec("fixed", [4, None]), spec("anyrank", None)]}
    with pytest.raises(ValueError) as err:
        batching_policies(config, functions, mutates=lambda name: name == "g")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_policies_accept_null_and_minus_one_and_metrics_count_batches() -> None:
    functions = {"f": spec("f", [None, 4]), "h": spec("h", [-1])}
    got = batching_policies({"f": {"max_batch": 8}, "h": {"max_batch": 2, "max_delay_ms": 0}},
                            functions)
    assert got["f"] == BatchingSpec(max_batch=8, max_delay_ms=2.0, dim=0)
    m = WorkerMetrics()
    m.batched = {"f"}
    m.call("f", 10, ok=True)
    m.batch("f", 5)
    m.call("plain", 10, ok=True)
    snap = m.snapshot()
    assert (snap.functions["f"].batches, snap.functions["f"].batched_runs) == (1, 5)
    assert snap.functions["plain"].batches is None


# --- real workers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ops")
    (folder / "batchops.py").write_text(textwrap.dedent(OPS))
    return folder


@pytest.fixture(scope="module")
def cluster(ops: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    log = ops / "calls.log"
    env = {"PYTHONPATH": str(ops)}
    slow = {"callable": "batchops:slow_double", "args": {"log": str(log)}}
    torch_cfg = {"factory": "interop_torch.models:mlp", "kwargs": {"seed": 0},
                 "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 64]}],
                 "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 10]}],
                 "threads": 1}
    port = int(free_tcp_address().rsplit(":", 1)[1])
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5, "metrics_port": port},
        "workers": [
            {"name": "b", "plugin": "numpy", "env": env, "config": {
                "functions": {"slow": slow},
                "batching": {"slow": {"max_batch": 32, "max_delay_ms": 100}}}},
            {"name": "u", "plugin": "numpy", "env": env, "config": {
                "functions": {"slow": {"callable": "batchops:slow_double"}}}},
            {"name": "t", "plugin": "torch", "config": {
                **torch_cfg, "batching": {"forward": {"max_batch": 64, "max_delay_ms": 50}}}},
        ]})
    with LocalCluster(spec, log_dir=str(tmp_path_factory.mktemp("logs"))) as c:
        yield c


def one_node(name: str, worker: str, function: str, out: str = "y") -> Graph:
    g = Graph(name).node("n", worker, function)
    return g.input("x", "n.x").output("y", f"n.{out}")


def submit_all(cluster: LocalCluster, graph: str, inputs: list[np.ndarray]) -> list[Any]:
    """Every run in flight at once; each run's outputs, or the exception it raised."""
    with cluster.client(timeout_s=WAIT_S) as c:
        futures = [c.submit(graph, {"x": x}) for x in inputs]
        out: list[Any] = []
        for f in futures:
            try:
                out.append(f.result(timeout=WAIT_S)["y"])
            except Exception as exc:
                out.append(exc)
        return out


def worker_calls(cluster: LocalCluster, worker: str, function: str,
                 metric: str = "interop_worker_calls") -> float:
    """A worker's series as the coordinator's Prometheus endpoint shows it (-1: absent)."""
    port = cluster.spec.coordinator.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    series = f'{metric}_total{{function="{function}",worker="{worker}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith(series)), -1.0)


def test_concurrent_runs_batch_into_fewer_calls_with_the_same_outputs(cluster: LocalCluster,
                                                                      ops: Path) -> None:
    with cluster.client() as c:
        c.register(one_node("batched", "b", "slow"))
        c.register(one_node("plain", "u", "slow"))
        described = next(w for w in c.workers() if w["name"] == "b")["functions"]
    assert described[0]["batching"] == {"max_batch": 32, "max_delay_ms": 100.0, "dim": 0}
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(RUNS)]
    batched = submit_all(cluster, "batched", inputs)
    plain = submit_all(cluster, "plain", inputs)
    for x, got, want in zip(inputs, batched, plain, strict=True):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, x * 2)
    calls = [int(n) for n in (ops / "calls.log").read_text().split()]
    assert sum(calls) == sum(len(x) for x in inputs)  # every row went through, once
    assert len(calls) < RUNS  # several runs shared a call
    deadline = time.monotonic() + WAIT_S  # the worker's own count, on a later heartbeat
    while worker_calls(cluster, "b", "slow") != len(calls) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_calls(cluster, "b", "slow") == len(calls) < RUNS
    assert worker_calls(cluster, "b", "slow", "interop_worker_batches") == len(calls)
    assert worker_calls(cluster, "b", "slow", "interop_worker_batched_runs") == RUNS
    assert worker_calls(cluster, "u", "slow", "interop_worker_batches") == -1  # not batched


def test_a_run_that_breaks_its_batch_fails_alone(cluster: LocalCluster) -> None:
    inputs = [np.full((2, 4), i, np.float32) for i in range(RUNS)]
    inputs[5][1, 2] = np.nan  # slow_double raises on it, and on any batch holding it
    results = submit_all(cluster, "batched", inputs)
    assert isinstance(results[5], FunctionFailedError) and "NaN" in str(results[5])
    for i, (x, got) in enumerate(zip(inputs, results, strict=True)):
        if i != 5:
            np.testing.assert_array_equal(got, x * 2)


def test_a_torch_mlp_batches_with_the_outputs_of_single_calls(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        c.register(one_node("mlp", "t", "forward", out="logits"))
        rng = np.random.default_rng(1)
        inputs = [rng.standard_normal((1 + i % 4, 64)).astype(np.float32) for i in range(RUNS)]
        alone = [c.call("t", "forward", {"x": x})["logits"] for x in inputs]  # CONTROL invoke
    for got, want in zip(submit_all(cluster, "mlp", inputs), alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_function_without_a_dynamic_batch_dim_is_refused_at_start(ops: Path) -> None:
    config = ops / "fixed.yaml"
    config.write_text(yaml.safe_dump({"functions": {"fixed": "batchops:fixed"},
                                      "batching": {"fixed": {"max_batch": 8}}}))
    proc = subprocess.run([sys.executable, "-m", "interop_runtime", "worker", "start",
                           "--plugin", "numpy", "--config", str(config), "--insecure",
                           "--coordinator", free_tcp_address()],
                          capture_output=True, text=True, timeout=WAIT_S,
                          env={**os.environ, "PYTHONPATH": str(ops), "COLUMNS": "200"})
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2, out
    assert out == ("cannot start worker: batching.fixed: input 'x' has shape (4), without a "
                   "dynamic size at dim 0")


def test_the_coordinator_refuses_a_registration_whose_batched_function_cannot_batch(
        cluster: LocalCluster) -> None:
    """Checked again where a worker registers: a peer that announces batching on a fixed
    batch dimension is refused (typed), and the coordinator serves on."""
    from interop_runtime.client.testing import dial
    from interop_runtime.wire.codec import decode, encode, new_id
    from interop_runtime.wire.messages import PROTOCOL_VERSION, RegisterMsg

    name = next(w.name for w in cluster.spec.workers)
    bad = FunctionSpec(name="f", inputs=[TensorSpec(name="x", dtype="float32", shape=[4, 2])],
                       outputs=[TensorSpec(name="y", dtype="float32", shape=[None, 2])],
                       batching=BatchingSpec(max_batch=8))
    sock = dial(cluster, as_name=name)
    try:
        sock.send_multipart(encode(RegisterMsg(
            v=PROTOCOL_VERSION, id=new_id(), src=name, name=name, plugin="numpy",
            endpoint="tcp://127.0.0.1:9", functions=[bad])))
        assert sock.poll(10_000)
        err = decode(sock.recv_multipart()).msg
        assert err.code == "bad_header" and "without a dynamic size at dim 0" in err.message
    finally:
        sock.close(0)
    with cluster.client() as c:  # the real worker is untouched
        assert any(w["name"] == name and w["alive"] for w in c.workers())
