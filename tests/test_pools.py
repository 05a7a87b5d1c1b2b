"""Replica pools (SPEC section 19) on real processes: placement over replicas, both data
paths, a lost replica's idempotent work retried elsewhere, scaling while runs flow, and
a worker that may not join a pool it was not granted."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from interop_runtime import ClusterSpec, Graph, LocalCluster
from interop_runtime.client.testing import numpy_worker
from interop_runtime.wire.errors import UnauthorizedError, WorkerLostError


def pool_spec(replicas: int = 3, **coordinator: object) -> ClusterSpec:
    return ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.3, **coordinator},
        "workers": [numpy_worker("front", "scale", "add"),
                    numpy_worker("rep", "sleep", "add_const", "scale", replicas=replicas)]})


def chain() -> Graph:
    """front.scale -> a pool node (sleep) -> front.add with a skip edge: a join on a fixed
    worker fed by a pool node and by the client's input."""
    g = Graph("pooled").node("a", "front", "scale", factor=2.0)
    g.pool_node("p", "rep", "sleep", seconds=0.05)
    g.node("j", "front", "add")
    g.edge("a.y", "p.x").edge("p.y", "j.a").edge("a.y", "j.b")
    return g.input("x", "a.x").output("y", "j.y")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(pool_spec()) as lc:
        yield lc


def _placed(c, graph: str, n: int) -> Counter[str]:
    runs = [r for r in c.runs() if r["graph"] == graph][-n:]
    return Counter(r["timings"]["p"]["worker"] for r in runs if "p" in r.get("timings", {}))


@pytest.mark.parametrize("direct", [True, False])
def test_concurrent_runs_spread_over_the_replicas(cluster, direct) -> None:
    with cluster.client(timeout_s=30, direct=direct) as c:
        c.register(chain())
        x = np.arange(4, dtype=np.float32)
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda _: c.run("pooled", {"x": x}), range(36)))
        for r in results:
            np.testing.assert_array_equal(r["y"], x * 4)
        used = Counter(r.timings["p"]["worker"] for r in results)
        assert set(used) == {"rep-0", "rep-1", "rep-2"}, used  # least outstanding first


def test_pool_node_fed_by_the_client_and_producing_the_output(cluster) -> None:
    g = Graph("edge-pool").pool_node("p", "rep", "scale", factor=3.0)
    g.input("x", "p.x").output("y", "p.y")
    with cluster.client(timeout_s=30) as c:
        c.register(g)
        futs = [c.submit("edge-pool", {"x": np.full(3, i, np.float32)}) for i in range(20)]
        for i, f in enumerate(futs):
            np.testing.assert_array_equal(f.result(timeout=30)["y"], np.full(3, 3 * i))


def test_the_routes_name_every_replica_and_a_forged_placement_is_refused(cluster) -> None:
    from interop_runtime.wire.codec import new_id
    from interop_runtime.wire.errors import InteropError
    from interop_runtime.wire.messages import PROTOCOL_VERSION, QueryMsg, RunMsg

    with cluster.client(timeout_s=10) as c:
        c.register(chain())
        body = c.request(QueryMsg(v=PROTOCOL_VERSION, id=new_id(), what="routes",
                                  graph="pooled")).msg.body
        assert body["pools"]["p"]["replicas"] == ["rep-0", "rep-1", "rep-2"]
        for bad in ({"p": "front"}, {"a": "rep-0"}, {"p": "nobody"}):
            msg = RunMsg(v=PROTOCOL_VERSION, id=new_id(), graph="pooled", run=new_id(),
                         direct=True, routes=body["routes_id"], place=bad)
            with pytest.raises(InteropError) as err:
                c.request(msg)
            assert err.value.code.value in ("bad_header", "unknown_target"), err.value
        # the coordinator still serves
        np.testing.assert_array_equal(c.run("pooled", {"x": np.ones(2, np.float32)})["y"],
                                      np.full(2, 4, np.float32))


def test_a_lost_replica_retries_idempotent_work_elsewhere_and_fails_the_rest() -> None:
    with LocalCluster(pool_spec(2)) as lc, lc.client(timeout_s=60) as c:
        g = Graph("idem").pool_node("p", "rep", "sleep", seconds=1.5, retries=2)
        g.input("x", "p.x").output("y", "p.y")
        c.register(g)
        futs = [c.submit("idem", {"x": np.full(2, i, np.float32)}, timeout_s=40)
                for i in range(4)]
        time.sleep(0.6)
        lc.kill_worker("rep-0")
        for i, f in enumerate(futs):  # nothing lost: the survivor ran them again
            np.testing.assert_array_equal(f.result(timeout=45)["y"], np.full(2, i))
        assert {r.timings["p"]["worker"] for r in (f.result() for f in futs)} == {"rep-1"}
        g2 = Graph("once").pool_node("p", "rep", "sleep", seconds=3.0)
        g2.input("x", "p.x").output("y", "p.y")
        c.register(g2)
        # rep-0 is gone: a new incarnation of the free name joins
        assert sorted(lc.scale("rep", 2)) == ["rep-0", "rep-1"]
        futs = [c.submit("once", {"x": np.ones(1, np.float32)}) for _ in range(4)]
        time.sleep(0.6)
        victim = "rep-0"
        lc.kill_worker(victim)
        outcomes = []
        for f in futs:
            try:
                f.result(timeout=30)
                outcomes.append("ok")
            except WorkerLostError as exc:
                assert victim in str(exc)
                outcomes.append("lost")
        assert "lost" in outcomes and "ok" in outcomes, outcomes


def test_scaling_up_and_down_while_runs_flow_loses_no_run() -> None:
    with LocalCluster(pool_spec(1)) as lc, lc.client(timeout_s=60) as c:
        c.register(chain())
        stop, errors, done = threading.Event(), [], Counter()

        def load() -> None:
            with lc.client(timeout_s=60) as mine:
                while not stop.is_set():
                    try:
                        r = mine.run("pooled", {"x": np.ones(2, np.float32)})
                        done[r.timings["p"]["worker"]] += 1
                    except Exception as exc:
                        errors.append(exc)
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert lc.scale("rep", 3) == ["rep-0", "rep-1", "rep-2"]
        time.sleep(2.0)
        assert lc.scale("rep", 1) == ["rep-0"]
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[:3]
        assert done["rep-1"] + done["rep-2"] > 0, done  # the new replicas took runs
        alive = {w["name"] for w in c.workers() if w["alive"]}
        assert {"rep-1", "rep-2"}.isdisjoint(alive)  # drained and stopped


def test_a_worker_key_without_the_pool_grant_cannot_join() -> None:
    """Under CURVE the allow-list grants pool membership: the front worker's own key,
    registering under its own name, may not claim a pool."""
    from interop_runtime.client.testing import dial
    from interop_runtime.wire.codec import decode, encode, new_id
    from interop_runtime.wire.messages import PROTOCOL_VERSION, RegisterMsg

    with LocalCluster(pool_spec(1)) as lc:
        sock = dial(lc, as_name="front")
        try:
            msg = RegisterMsg(v=PROTOCOL_VERSION, id=new_id(), src="front", name="front",
                              plugin="numpy", endpoint="tcp://127.0.0.1:1", pool="rep")
            sock.send_multipart(encode(msg))
            assert sock.poll(10_000)
            err = decode(sock.recv_multipart()).msg
            assert err.code == UnauthorizedError.code and "pool" in err.message
        finally:
            sock.close(0)
        with lc.client() as c:  # still the one live front, and the coordinator serves
            assert [w["name"] for w in c.workers() if w["pool"] == "rep"] == ["rep-0"]


def test_soak_every_node_of_a_pool_graph_killed_once_loses_nothing() -> None:
    """Under load, kill -9 every worker of a pool graph once (the fixed one and each
    replica); supervised restarts and idempotent retries: every run still succeeds."""
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.3},
        "supervise": {"enabled": True, "initial_backoff_s": 0.2},
        "workers": [numpy_worker("front", "scale", "add"),
                    numpy_worker("rep", "sleep", replicas=3)]})
    g = Graph("soak").node("a", "front", "scale", factor=2.0, retries=3)
    g.pool_node("p", "rep", "sleep", seconds=0.05, retries=3)
    g.node("j", "front", "add", retries=3)
    g.edge("a.y", "p.x").edge("p.y", "j.a").edge("a.y", "j.b")
    g.input("x", "a.x").output("y", "j.y")
    with LocalCluster(spec) as lc, lc.client(timeout_s=90) as c:
        c.register(g)
        stop, errors, ok = threading.Event(), [], Counter()

        def load(seed: int) -> None:
            with lc.client(timeout_s=90) as mine:
                i = seed
                while not stop.is_set():
                    x = np.full(3, i, np.float32)
                    try:
                        np.testing.assert_array_equal(
                            mine.run("soak", {"x": x}, timeout_s=60)["y"], x * 4)
                        ok["runs"] += 1
                    except Exception as exc:
                        errors.append(exc)
                    i += 4
        threads = [threading.Thread(target=load, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for victim in ["rep-0", "front", "rep-1", "rep-2"]:
            time.sleep(1.0)
            pid = lc.workers[victim].pid
            lc.kill_worker(victim)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # restarted and registered again
                alive = {w["name"]: w["pid"] for w in c.workers() if w["alive"]}
                if alive.get(victim) not in (None, pid):
                    break
                time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=90)
        assert not errors, errors[:3]
        assert ok["runs"] > 20
        assert all(lc.restarts.get(v) == 1 for v in ["rep-0", "front", "rep-1", "rep-2"])
