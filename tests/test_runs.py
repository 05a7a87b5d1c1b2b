"""End to end on real processes: a diamond DAG, concurrency, CONTROL, PARAM, detach."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from interop_runtime import (
    FunctionFailedError,
    Graph,
    RunCancelledError,
    RunTimeoutError,
    UnknownFunctionError,
    UnknownTargetError,
)
from interop_runtime.client.testing import numpy_worker


def diamond() -> Graph:
    g = Graph("diamond")
    g.node("a", "w1", "scale", factor=2.0)
    g.node("b", "w2", "add_const", value=1.0)
    g.node("c", "w2", "relu")
    g.node("d", "w3", "add")
    g.edge("a.y", "b.x").edge("a.y", "c.x").edge("b.y", "d.a").edge("c.y", "d.b")
    g.input("x", "a.x")
    g.output("out", "d.y")
    return g


def expected(x: np.ndarray) -> np.ndarray:
    a = x * 2
    return (a + 1) + np.maximum(a, 0)


@pytest.fixture
def three(start_cluster):
    return start_cluster(
        numpy_worker("w1", "scale", "sleep", "fail", "identity"),
        numpy_worker("w2", "add_const", "relu", "identity"),
        numpy_worker("w3", "add", "identity"),
    )


def test_diamond_across_three_workers(three) -> None:
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with three.client() as c:
        assert c.validate(diamond()) == ["a", "b", "c", "d"]
        info = c.register(diamond())
        assert info["workers"] == ["w1", "w2", "w3"]
        result = c.run("diamond", {"x": x})
        np.testing.assert_array_equal(result["out"], expected(x))
        assert set(result.timings) == {"a", "b", "c", "d"}
        assert result.timings["a"]["worker"] == "w1"
        # a's 128-byte output went to w2 twice (b and c), as one message of two inputs
        assert result.timings["a"]["bytes_out"] == x.nbytes * 2


def test_concurrent_runs_each_get_their_own_result(three) -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(64)]
    with three.client() as c:
        c.register(diamond())
        futures = [c.submit("diamond", {"x": x}) for x in inputs]
        for x, fut in zip(inputs, futures):
            np.testing.assert_array_equal(fut.result(timeout=30)["out"], expected(x))
        # many threads sharing one client
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            try:
                for i in range(10):
                    x = np.full((2, 2), seed * 100 + i, dtype=np.float32)
                    np.testing.assert_array_equal(c.run("diamond", {"x": x})["out"], expected(x))
            except BaseException as exc:
                errors.append(exc)
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors

        async def many() -> list[np.ndarray]:
            return await asyncio.gather(*[c.run_async("diamond", {"x": x}) for x in inputs[:16]])
        for x, r in zip(inputs, asyncio.run(many())):
            np.testing.assert_array_equal(r["out"], expected(x))


def test_independent_branches_run_concurrently(start_cluster) -> None:
    # two 0.6 s sleeps on different workers, then a join: ~0.6 s, not ~1.2 s
    cluster = start_cluster(numpy_worker("s1", "sleep"), numpy_worker("s2", "sleep"),
                            numpy_worker("j", "add"))
    g = Graph("parallel")
    g.node("p", "s1", "sleep", seconds=0.6).node("q", "s2", "sleep", seconds=0.6)
    g.node("r", "j", "add").edge("p.y", "r.a").edge("q.y", "r.b")
    g.input("x", "p.x", "q.x").output("y", "r.y")
    with cluster.client() as c:
        result = c.run(g, {"x": np.ones(3, np.float32)})
        np.testing.assert_array_equal(result["y"], np.full(3, 2, np.float32))
        p_done, q_done = result.timings["p"]["done_us"], result.timings["q"]["done_us"]
        # both finished before either could have, had they run one after the other
        assert max(p_done, q_done) < 1_150_000


def test_call_one_function_and_errors(three) -> None:
    with three.client() as c:
        out = c.call("w1", "scale", {"x": np.ones(3, np.float32)}, factor=3.0)
        np.testing.assert_array_equal(out["y"], np.full(3, 3, np.float32))
        with pytest.raises(UnknownFunctionError, match="nope"):
            c.call("w1", "nope", {"x": np.ones(1, np.float32)})
        with pytest.raises(UnknownTargetError, match="ghost"):
            c.call("ghost", "scale", {"x": np.ones(1, np.float32)})
        with pytest.raises(FunctionFailedError, match="deliberate"):
            c.call("w1", "fail", {"x": np.ones(1, np.float32)})
        # still serving
        assert c.call("w2", "relu", {"x": -np.ones(2, np.float32)})["y"].tolist() == [0, 0]
        assert c.control("w2", "ping")["name"] == "w2"


def test_failed_node_fails_the_run_with_its_name(three) -> None:
    g = Graph("failing").node("f", "w1", "fail", message="boom").node("i", "w2", "identity")
    g.edge("f.y", "i.x").input("x", "f.x").output("y", "i.y")
    with three.client() as c:
        with pytest.raises(FunctionFailedError) as err:
            c.run(g, {"x": np.ones(1, np.float32)})
        assert err.value.node == "f" and err.value.worker == "w1" and "boom" in str(err.value)
        c.register(diamond())
        assert c.run("diamond", {"x": np.ones(1, np.float32)})["out"].tolist() == [5.0]


def test_run_deadline_and_cancel(three) -> None:
    g = Graph("slow").node("s", "w1", "sleep", seconds=1.5).input("x", "s.x").output("y", "s.y")
    with three.client() as c:
        c.register(g)
        with pytest.raises(RunTimeoutError, match="s on w1"):
            c.run("slow", {"x": np.ones(1, np.float32)}, timeout_s=0.3)
        fut = c.submit("slow", {"x": np.ones(1, np.float32)}, run_id="to-cancel")
        c.cancel("to-cancel")
        with pytest.raises(RunCancelledError):
            fut.result(timeout=10)


def test_detached_run_is_collected_later(three) -> None:
    with three.client() as c:
        c.register(diamond())
        run_id = c.start("diamond", {"x": np.ones(2, np.float32)})
        for _ in range(100):
            try:
                result = c.result(run_id)
                break
            except Exception:  # BusyError while running
                import time
                time.sleep(0.05)
        np.testing.assert_array_equal(result["out"], expected(np.ones(2, np.float32)))
        with pytest.raises(UnknownTargetError):
            c.result(run_id)  # collected once


def test_params_get_set_with_versions(start_cluster) -> None:
    cluster = start_cluster(numpy_worker("p", "linear", config={
        "params": {"w": {"shape": [3, 2], "dtype": "float32", "seed": 0}}}))
    with cluster.client() as c:
        listed = c.list_params("p")
        assert listed["params"]["w"]["shape"] == [3, 2] and listed["version"] == 0
        params = c.get_params("p")
        assert params.version == 0 and params["w"].shape == (3, 2)
        x = np.ones((1, 3), np.float32)
        np.testing.assert_allclose(c.call("p", "linear", {"x": x})["y"], x @ params["w"])
        new_w = np.arange(6, dtype=np.float32).reshape(3, 2)
        assert c.set_params("p", {"w": new_w}, expected_version=0) == 1
        got = c.get_params("p", ["w"])
        assert got.version == 1
        np.testing.assert_array_equal(got["w"], new_w)
        np.testing.assert_array_equal(c.call("p", "linear", {"x": x})["y"], x @ new_w)
        with pytest.raises(Exception, match="version 1"):
            c.set_params("p", {"w": new_w}, expected_version=0)  # stale writer


def test_same_code_over_ipc(start_cluster, tmp_path) -> None:
    """Coordinator and worker inboxes on ipc:// sockets instead of tcp://."""
    cluster = start_cluster(
        {**numpy_worker("w1", "scale"), "bind": "ipc"},
        {**numpy_worker("w2", "add_const", "relu"), "bind": "ipc"},
        {**numpy_worker("w3", "add"), "bind": "ipc"},
        bind=f"ipc://{tmp_path}/coordinator.sock")
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    with cluster.client() as c:
        assert all(w["endpoint"].startswith("ipc://") for w in c.workers())
        np.testing.assert_array_equal(c.run(diamond(), {"x": x})["out"], expected(x))
