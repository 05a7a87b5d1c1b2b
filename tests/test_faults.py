"""Workers that die, and a coordinator that restarts."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from interop_runtime import Graph, WorkerLostError
from interop_runtime.client.testing import numpy_worker


def test_sigkill_mid_run_fails_the_run_and_coordinator_keeps_serving(start_cluster) -> None:
    cluster = start_cluster(numpy_worker("victim", "sleep"), numpy_worker("ok", "identity"),
                            heartbeat_s=0.3)
    slow = Graph("slow").node("s", "victim", "sleep", seconds=10).node("i", "ok", "identity")
    slow.edge("s.y", "i.x").input("x", "s.x").output("y", "i.y")
    fine = Graph("fine").node("i", "ok", "identity").input("x", "i.x").output("y", "i.y")
    with cluster.client(timeout_s=20) as c:
        c.register(slow)
        fut = c.submit("slow", {"x": np.ones(2, np.float32)})
        time.sleep(0.5)  # the sleep node is now running on the victim
        killed_at = time.monotonic()
        cluster.kill_worker("victim", signal.SIGKILL)
        with pytest.raises(WorkerLostError) as err:
            fut.result(timeout=10)
        detected_s = time.monotonic() - killed_at
        assert err.value.worker == "victim" and err.value.node == "s"
        assert "victim" in str(err.value) and "s" in str(err.value)
        # two missed 0.3 s heartbeats, plus slack for the client's side on a busy CI machine
        assert detected_s < 2 * 0.3 + 0.5
        # the coordinator goes on serving other graphs...
        np.testing.assert_array_equal(c.run(fine, {"x": np.ones(3, np.float32)})["y"], np.ones(3))
        # ...and says clearly why the dead worker's graph cannot run
        with pytest.raises(WorkerLostError, match="victim"):
            c.run("slow", {"x": np.ones(2, np.float32)})
        assert [w["alive"] for w in c.workers() if w["name"] == "victim"] == [False]


def test_worker_crashing_inside_a_function(start_cluster) -> None:
    cluster = start_cluster(numpy_worker("crashy", "crash"), heartbeat_s=0.3)
    g = Graph("crash").node("c", "crashy", "crash").input("x", "c.x").output("y", "c.y")
    with cluster.client(timeout_s=20) as c:
        with pytest.raises(WorkerLostError, match="crashy"):
            c.run(g, {"x": np.ones(1, np.float32)})
        assert c.status()["runs_failed"] == 1


def test_restarted_worker_reregisters_and_graph_runs_again(start_cluster) -> None:
    cluster = start_cluster(numpy_worker("w", "scale"), heartbeat_s=0.3)
    g = Graph("g").node("a", "w", "scale", factor=3.0).input("x", "a.x").output("y", "a.y")
    with cluster.client(timeout_s=20) as c:
        c.register(g)
        cluster.kill_worker("w")
        cluster.start_worker(cluster.spec.workers[0])
        cluster.wait_ready(["w"])
        # plans were re-installed on the new incarnation (its endpoint changed)
        out = c.run("g", {"x": np.ones(2, np.float32)})
        np.testing.assert_array_equal(out["y"], np.full(2, 3, np.float32))


def test_coordinator_restart_keeps_graphs_and_results(start_cluster, tmp_path) -> None:
    cluster = start_cluster(numpy_worker("w", "scale", "sleep"), heartbeat_s=0.3,
                            state=str(tmp_path / "state.sqlite"))
    g = Graph("kept").node("a", "w", "scale", factor=5.0).input("x", "a.x").output("y", "a.y")
    with cluster.client(timeout_s=20) as c:
        c.register(g)
        run_id = c.start("kept", {"x": np.ones(2, np.float32)})
        time.sleep(0.5)  # finished and stored, not yet collected
    cluster.restart_coordinator()
    with cluster.client(timeout_s=20) as c:
        deadline = time.monotonic() + 15
        while not any(w["alive"] for w in c.workers()):  # the worker re-registers by itself
            assert time.monotonic() < deadline, "worker did not re-register"
            time.sleep(0.1)
        assert [x["name"] for x in c.graphs()] == ["kept"]
        np.testing.assert_array_equal(c.result(run_id)["y"], np.full(2, 5, np.float32))
        np.testing.assert_array_equal(c.run("kept", {"x": np.ones(1, np.float32)})["y"], [5.0])


def test_many_clients_while_a_worker_dies(start_cluster) -> None:
    """Runs on other graphs are not disturbed by a worker death."""
    cluster = start_cluster(numpy_worker("a", "identity"), numpy_worker("b", "sleep"),
                            heartbeat_s=0.3)
    ga = Graph("ga").node("n", "a", "identity").input("x", "n.x").output("y", "n.y")
    gb = Graph("gb").node("n", "b", "sleep", seconds=5).input("x", "n.x").output("y", "n.y")
    results: list[bool] = []
    with cluster.client(timeout_s=20) as c:
        c.register(ga)
        c.register(gb)
        doomed = c.submit("gb", {"x": np.ones(1, np.float32)})

        def hammer() -> None:
            for i in range(50):
                x = np.full(4, i, np.float32)
                results.append(bool(np.array_equal(c.run("ga", {"x": x})["y"], x)))
        t = threading.Thread(target=hammer)
        t.start()
        cluster.kill_worker("b")
        t.join(30)
        with pytest.raises(WorkerLostError):
            doomed.result(timeout=10)
    assert results == [True] * 50


def test_supervised_worker_is_restarted_and_idempotent_node_retried(start_cluster) -> None:
    """kill -9 mid-run: the supervisor restarts the worker, and the run of an idempotent
    node is re-run on the new incarnation instead of failing."""
    from interop_runtime import ClusterSpec, LocalCluster

    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.3},
        "supervise": {"enabled": True, "initial_backoff_s": 0.2},
        "workers": [numpy_worker("flaky", "sleep", "scale")]})
    g = Graph("retry").node("s", "flaky", "sleep", seconds=1.0, retries=2)
    g.node("m", "flaky", "scale", factor=2.0, retries=2).edge("s.y", "m.x")
    g.input("x", "s.x").output("y", "m.y")
    with LocalCluster(spec) as cluster, cluster.client(timeout_s=60) as c:
        c.register(g)
        fut = c.submit("retry", {"x": np.ones(2, np.float32)}, timeout_s=45)
        time.sleep(0.4)
        first_pid = cluster.workers["flaky"].pid
        cluster.kill_worker("flaky")
        out = fut.result(timeout=50)
        np.testing.assert_array_equal(out["y"], np.full(2, 2, np.float32))
        assert cluster.restarts["flaky"] == 1 and cluster.workers["flaky"].pid != first_pid
        # a non-idempotent node still fails fast with a clear error
        g2 = Graph("once").node("s", "flaky", "sleep", seconds=3.0).input("x", "s.x")
        g2.output("y", "s.y")
        c.register(g2)
        fut = c.submit("once", {"x": np.ones(1, np.float32)})
        time.sleep(0.4)
        cluster.kill_worker("flaky")
        with pytest.raises(WorkerLostError, match="flaky"):
            fut.result(timeout=20)


def test_slow_consumer_backpressure_bounded_and_nothing_dropped(start_cluster) -> None:
    """A burst into a slow pipeline: what is admitted completes, the rest is refused at
    once with `busy` (bounded memory), and nothing disappears silently."""
    from interop_runtime import BusyError

    cluster = start_cluster(numpy_worker("fast", "identity"), numpy_worker("slow", "sleep"),
                            max_runs_per_client=8)
    g = Graph("slowpipe").node("f", "fast", "identity").node("s", "slow", "sleep", seconds=0.05)
    g.edge("f.y", "s.x").input("x", "f.x").output("y", "s.y")
    with cluster.client(timeout_s=60) as c:
        c.register(g)
        futures = [c.submit("slowpipe", {"x": np.full(2, i, np.float32)}) for i in range(24)]
        done, busy = [], 0
        for i, fut in enumerate(futures):
            try:
                done.append((i, fut.result(timeout=30)["y"]))
            except BusyError:
                busy += 1
        assert len(done) + busy == 24 and 8 <= len(done) < 24 and busy > 0
        assert all(np.array_equal(y, np.full(2, i, np.float32)) for i, y in done)
        # once the queue drains, the same client is admitted again
        assert c.run("slowpipe", {"x": np.ones(2, np.float32)})["y"].tolist() == [1.0, 1.0]


def test_coordinator_restart_under_load(start_cluster, tmp_path) -> None:
    """Clients keep running while the coordinator restarts: runs in flight at that moment
    fail with a typed error (no hang), the workers re-register by themselves, the graph is
    still registered, and runs succeed again."""
    from interop_runtime import InteropError

    cluster = start_cluster(numpy_worker("w1", "scale"), numpy_worker("w2", "add_const"),
                            heartbeat_s=0.3, state=str(tmp_path / "state.sqlite"))
    g = Graph("busy").node("a", "w1", "scale").node("b", "w2", "add_const")
    g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")
    with cluster.client(timeout_s=20) as c:
        c.register(g)
    stop = threading.Event()
    ok, failed = [0], [0]

    def hammer() -> None:
        with cluster.client(timeout_s=3) as c:
            while not stop.is_set():
                try:
                    y = c.run("busy", {"x": np.ones(2, np.float32)}, timeout_s=2)["y"]
                    assert y.tolist() == [3.0, 3.0]
                    ok[0] += 1
                except InteropError:
                    failed[0] += 1
                    time.sleep(0.05)
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = ok[0]
    cluster.restart_coordinator()
    deadline = time.monotonic() + 20
    while ok[0] < before + 50:  # runs flow again once the workers are back
        assert time.monotonic() < deadline, "runs did not resume after the restart"
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(30)
    assert before > 0 and ok[0] >= before + 50
    with cluster.client() as c:
        assert [x["name"] for x in c.graphs()] == ["busy"]


def test_coordinator_kill9_ends_every_in_flight_run_with_a_typed_answer(start_cluster,
                                                                          tmp_path) -> None:
    """kill -9 with 16 runs in flight (8 waiting for their reply, 8 detached): after the
    restart every one of them ends with CoordinatorRestartedError, none in silence; the
    client notices the new epoch by itself, and the cluster serves again."""
    from interop_runtime import CoordinatorRestartedError

    cluster = start_cluster(numpy_worker("w", "sleep", "scale"), heartbeat_s=0.3,
                            state=str(tmp_path / "state.sqlite"))
    g = Graph("slow").node("s", "w", "sleep", seconds=0.5).input("x", "s.x").output("y", "s.y")
    with cluster.client(timeout_s=30) as c:
        c.register(g)
        x = {"x": np.ones(2, np.float32)}
        waiting = [c.submit("slow", x, timeout_s=30) for _ in range(8)]
        detached = [c.start("slow", x, timeout_s=30) for _ in range(8)]
        time.sleep(0.5)  # all 16 are in flight on the worker
        assert cluster.coordinator is not None
        cluster.coordinator.kill()  # SIGKILL: no goodbye, nothing flushed
        cluster.coordinator.wait(10)
        cluster.start_coordinator()
        ends: list[str] = []
        for fut in waiting:  # a result if it finished before the kill, else the typed error
            try:
                assert fut.result(timeout=20)["y"].tolist() == [1.0, 1.0]
                ends.append("result")
            except CoordinatorRestartedError:
                ends.append("restarted")
        for run_id in detached:
            try:
                assert c.result(run_id)["y"].tolist() == [1.0, 1.0]
                ends.append("result")
            except CoordinatorRestartedError:
                ends.append("restarted")
        assert len(ends) == 16 and ends.count("restarted") >= 8, ends
        # the worker re-registers by itself once it has worked through its queue (16 x 0.5 s)
        deadline = time.monotonic() + 30
        while not any(w["alive"] for w in c.workers()):
            assert time.monotonic() < deadline, "worker did not re-register"
            time.sleep(0.1)
        fast = Graph("fast").node("a", "w", "scale").input("x", "a.x").output("y", "a.y")
        assert c.run(fast, x)["y"].tolist() == [2.0, 2.0]


@pytest.mark.parametrize("direct", [False, True])
def test_a_blocking_run_ends_typed_across_a_coordinator_kill9(start_cluster, tmp_path,
                                                             direct: bool) -> None:
    """Client.run waits in the caller's thread (not the I/O thread's): it watches the
    coordinator's epoch itself, and a kill -9 mid-run ends it with CoordinatorRestartedError.
    A direct run's data does not pass the coordinator: it may also finish with its outputs,
    if they arrive before the client sees the new epoch; it never ends in silence."""
    from interop_runtime import CoordinatorRestartedError

    cluster = start_cluster(numpy_worker("w", "sleep"), heartbeat_s=0.3,
                            state=str(tmp_path / "state.sqlite"))
    g = Graph("slow").node("s", "w", "sleep", seconds=2.0).input("x", "s.x").output("y", "s.y")
    outcome: list[BaseException | None] = []
    with cluster.client(timeout_s=30, direct=direct) as c:
        c.register(g)

        def blocking_run() -> None:
            try:
                out = c.run("slow", {"x": np.ones(2, np.float32)}, timeout_s=30)
                outcome.append(None if np.array_equal(out["y"], np.ones(2, np.float32))
                               else AssertionError(f"wrong output {out}"))
            except BaseException as exc:
                outcome.append(exc)
        t = threading.Thread(target=blocking_run)
        t.start()
        time.sleep(0.7)
        assert cluster.coordinator is not None
        cluster.coordinator.kill()
        cluster.coordinator.wait(10)
        cluster.start_coordinator()
        t.join(30)
    assert len(outcome) == 1, outcome
    if direct:
        assert outcome[0] is None or isinstance(outcome[0], CoordinatorRestartedError), outcome
    else:
        assert isinstance(outcome[0], CoordinatorRestartedError), outcome
