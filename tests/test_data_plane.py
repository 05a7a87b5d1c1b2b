"""The data plane on real processes: direct runs (protocol/SPEC.md section 16) and same-host
shared memory (section 17).

Two clusters serve the module. ``secure`` is the default LocalCluster (CURVE): w1 and w2
run the chain x -> w1.scale -> w2.add_const -> y (y = 2x + 1); ``tiny`` has a 1 MiB
shared-memory pool; plain1 and plain2 run with ``--no-shm``. ``insecure`` (plain text on
loopback, like tests/test_attacks_insecure.py) is where a raw DEALER speaks the direct
protocol by hand, and where the victims v1..v3 are killed mid-run.
"""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from interop_runtime import (
    BusyError,
    ClusterSpec,
    ErrorCode,
    Graph,
    LocalCluster,
    WorkerLostError,
)
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.transport.shm import SegmentPool, host_key
from interop_runtime.wire.codec import Envelope, decode, encode, new_id
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DataMsg,
    ErrorMsg,
    Header,
    QueryMsg,
    ReplyMsg,
    RunMsg,
)

pytestmark = pytest.mark.skipif(host_key() is None, reason="needs Linux memfd_create")

HEARTBEAT_S = 0.5
MIB = 1 << 20
KIB_1 = 256  # float32 elements in 1 KiB
MIB_4 = MIB  # float32 elements in 4 MiB
SLEEP_S = 30  # a victim's node: long enough to be killed in the middle of it
X = np.arange(4, dtype=np.float32)


def chain(name: str, first: str, second: str, f1: str = "scale", f2: str = "add_const",
          **second_args: Any) -> Graph:
    g = Graph(name).node("a", first, f1).node("b", second, f2, **second_args)
    return g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")


def expected(x: np.ndarray) -> np.ndarray:
    """What scale (factor 2) then add_const (value 1) give, in float32 as the workers do."""
    return (x * np.float32(2)).astype(np.float32) + np.float32(1)


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    """Poll until ``predicate`` is truthy (releases and cancels are asynchronous); a
    generous timeout only keeps a broken runtime from hanging the suite."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


def shm(c: Any, worker: str) -> dict[str, int] | None:
    stats: dict[str, int] | None = c.control(worker, "ping")["shm"]
    return stats


def none_leased(c: Any, *workers: str) -> None:
    for w in workers:
        wait_for(lambda w=w: shm(c, w)["leased"] == 0, f"{w}'s segments to be released")


def hdr() -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": new_id(), "src": "rogue"}


def recv(sock: zmq.Socket, timeout_s: float = 15.0) -> Envelope | None:
    if not sock.poll(int(timeout_s * 1000)):
        return None
    return decode(sock.recv_multipart())


def ask(sock: zmq.Socket, msg: Header, arrays: dict[str, np.ndarray] | None = None,
        timeout_s: float = 15.0, **encode_args: Any) -> Envelope | None:
    sock.send_multipart(encode(msg, arrays, **encode_args))
    return recv(sock, timeout_s)


def run_of(c: Any, run: str) -> dict[str, Any] | None:
    """The run in the coordinator's recent list, once it has ended."""
    return next((r for r in c.runs()["recent"] if r["run"] == run), None)


def outstanding_is(c: Any, graph: str, nodes: dict[str, str]) -> bool:
    return any(r["graph"] == graph and r["outstanding"] == nodes for r in c.runs()["active"])


# --- the clusters ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secure() -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": HEARTBEAT_S},
        "workers": [numpy_worker("w1", "scale", "identity", "sleep"),
                    numpy_worker("w2", "add_const", "identity", "sleep"),
                    numpy_worker("tiny", "scale", shm_pool_mib=1),
                    numpy_worker("plain1", "scale", shm=False),
                    numpy_worker("plain2", "add_const", shm=False)]})
    with LocalCluster(spec) as lc:
        with lc.client() as c:
            for g in (chain("chain", "w1", "w2"), chain("tiny_chain", "tiny", "w2"),
                      chain("plain_chain", "plain1", "plain2")):
                c.register(g)
        yield lc


@pytest.fixture(scope="module")
def insecure() -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": HEARTBEAT_S, "curve": False},
        "workers": [numpy_worker("w1", "scale", "identity"),
                    numpy_worker("w2", "add_const", "identity"),
                    numpy_worker("v1", "sleep"), numpy_worker("v2", "sleep"),
                    numpy_worker("v3", "sleep")]})
    with LocalCluster(spec) as lc:
        with lc.client() as c:
            c.register(Graph("echo").node("a", "w1", "identity").input("x", "a.x")
                       .output("y", "a.y"))
            c.register(chain("chain", "w1", "w2"))
            for victim, f1 in (("v1", "scale"), ("v2", "scale"), ("v3", "identity")):
                c.register(chain(f"lost_{victim}", "w1", victim, f1=f1, f2="sleep",
                                 seconds=SLEEP_S))
        yield lc


# --- 1-3, 9, 10: a CURVE cluster ---------------------------------------------------------------

def test_direct_chain_matches_the_coordinator_path(secure: LocalCluster) -> None:
    rng = np.random.default_rng(0)
    with secure.client() as direct, secure.client(direct=False) as via:
        for n in (KIB_1, MIB_4):
            x = rng.standard_normal(n).astype(np.float32)
            d = direct.run("chain", {"x": x}, timeout_s=60)
            v = via.run("chain", {"x": x}, timeout_s=60)
            np.testing.assert_array_equal(d["y"], v["y"])
            np.testing.assert_array_equal(d["y"], expected(x))
            assert set(d.timings) == {"a", "b"}, d.timings
            for node, worker in (("a", "w1"), ("b", "w2")):
                t = d.timings[node]
                assert t["worker"] == worker, t
                assert {"compute_us", "wait_us", "bytes_out", "done_us"} <= set(t), t
            assert d.timings["a"]["bytes_out"] == x.nbytes
            assert d.timings["b"]["done_us"] >= d.timings["a"]["done_us"], d.timings


def test_shared_memory_segments_are_reused_and_released(secure: LocalCluster) -> None:
    with secure.client() as c:
        x = np.random.default_rng(1).standard_normal(MIB_4).astype(np.float32)
        np.testing.assert_array_equal(c.run("chain", {"x": x}, timeout_s=60)["y"], expected(x))
        for i in range(10):  # back to back
            x = np.full(MIB_4, i, np.float32)
            np.testing.assert_array_equal(c.run("chain", {"x": x}, timeout_s=60)["y"],
                                          expected(x))
        none_leased(c, "w1", "w2")
        # w1 wrote a's 4 MiB output for w2, and w2 wrote the graph output for us (a direct
        # run: a run through the coordinator would have sent it to the coordinator as frames)
        segments = {}
        for w in ("w1", "w2"):
            stats = shm(c, w)
            assert stats is not None and 1 <= stats["segments"] <= 2, (w, stats)
            assert stats["capacity_bytes"] >= 4 * MIB and stats["forwarded"] == 0, (w, stats)
            segments[w] = stats["segments"]
        for i in range(5):  # one at a time, each released before the next: none is added
            x = np.full(MIB_4, 100 + i, np.float32)
            np.testing.assert_array_equal(c.run("chain", {"x": x}, timeout_s=60)["y"],
                                          expected(x))
            none_leased(c, "w1", "w2")
        assert {w: shm(c, w)["segments"] for w in ("w1", "w2")} == segments


def test_no_shm_workers_say_so_and_run_large_tensors_as_frames(secure: LocalCluster) -> None:
    with secure.client() as c:
        assert shm(c, "plain1") is None and shm(c, "plain2") is None
        x = np.random.default_rng(2).standard_normal(MIB_4).astype(np.float32)
        for _ in range(2):
            out = c.run("plain_chain", {"x": x}, timeout_s=60)
            np.testing.assert_array_equal(out["y"], expected(x))
        assert shm(c, "plain1") is None


def test_exhausted_pool_is_busy_never_corrupt(secure: LocalCluster) -> None:
    rng = np.random.default_rng(3)
    with secure.client() as c:
        big = rng.standard_normal(MIB_4).astype(np.float32)
        with pytest.raises(BusyError):  # a's 4 MiB output does not fit tiny's 1 MiB pool
            c.run("tiny_chain", {"x": big}, timeout_s=60)
        small = rng.standard_normal(KIB_1).astype(np.float32)
        np.testing.assert_array_equal(c.run("tiny_chain", {"x": small}, timeout_s=60)["y"],
                                      expected(small))
        for _ in range(2):  # 512 KiB fits; the second reuses the first's released segment
            half = rng.standard_normal(128 * 1024).astype(np.float32)
            np.testing.assert_array_equal(c.run("tiny_chain", {"x": half}, timeout_s=60)["y"],
                                          expected(half))
            none_leased(c, "tiny")
        stats = shm(c, "tiny")
        assert stats is not None and stats["segments"] == 1, stats
        assert stats["capacity_bytes"] <= MIB, stats


def test_zero_copy_outputs_stay_put_while_held_and_go_back_when_dropped(
        secure: LocalCluster) -> None:
    with secure.client() as c:
        xs = [np.full(MIB_4, i, np.float32) for i in range(3)]
        held = [c.run("chain", {"x": x}, timeout_s=60, copy=False)["y"] for x in xs]
        for x, y in zip(xs, held, strict=True):
            assert not y.flags.writeable
            np.testing.assert_array_equal(y, expected(x))
        with pytest.raises(ValueError, match="read-only"):
            held[0][0] = 5.0
        assert shm(c, "w2")["leased"] == 3  # each held output keeps one of w2's segments
        for i in range(4):  # later runs, copied or not, never write a held segment
            x = np.full(MIB_4, 10 + i, np.float32)
            y = c.run("chain", {"x": x}, timeout_s=60, copy=i % 2 == 0)["y"]
            np.testing.assert_array_equal(y, expected(x))
            del y
        for x, y in zip(xs, held, strict=True):
            np.testing.assert_array_equal(y, expected(x))
        part = held[0][:10]  # a view of a view keeps its segment too
        del held, x, y
        c.run("chain", {"x": X}, timeout_s=60)  # the next run sends the releases
        wait_for(lambda: shm(c, "w2")["leased"] == 1, "the dropped outputs' release")
        np.testing.assert_array_equal(part, expected(xs[0])[:10])
        del part  # and no run after it: the client's I/O thread sends the release
        none_leased(c, "w1", "w2")
        # the asynchronous path, from other threads: views dropped there go back as well
        futures = [c.submit("chain", {"x": x}, copy=False) for x in xs]
        ys = [f.result(timeout=60)["y"] for f in futures]
        for x, y in zip(xs, ys, strict=True):
            assert not y.flags.writeable
            np.testing.assert_array_equal(y, expected(x))
        del futures, y  # the Futures hold their results too
        threading.Thread(target=ys.clear).start()
        none_leased(c, "w1", "w2")


def test_zero_copy_outputs_past_the_clients_share_of_a_pool_come_as_frames(
        secure: LocalCluster) -> None:
    half = np.arange(192 * 1024, dtype=np.float32)  # 768 KiB: over half of tiny's 1 MiB
    with secure.client() as c:
        c.register(Graph("tiny_out").node("a", "tiny", "scale").input("x", "a.x")
                   .output("y", "a.y"))
        held = c.run("tiny_out", {"x": half}, timeout_s=60, copy=False)["y"]
        assert not held.flags.writeable
        assert shm(c, "tiny")["leased"] == 0  # frames: nothing of tiny's pool is pinned
        # so tiny's edge to w2 still finds its segment
        np.testing.assert_array_equal(c.run("tiny_chain", {"x": half}, timeout_s=60)["y"],
                                      expected(half))
        np.testing.assert_array_equal(held, half * 2)
        none_leased(c, "tiny")


def test_a_shared_input_array_goes_and_comes_back_without_a_copy(secure: LocalCluster) -> None:
    with secure.client() as c:
        c.register(chain("echo2", "w1", "w2", f1="identity", f2="identity"))
        buf = c.shared_array(MIB_4)
        buf[:] = np.arange(MIB_4, dtype=np.float32)
        np.testing.assert_array_equal(c.run("chain", {"x": buf}, timeout_s=60)["y"],
                                      expected(buf))
        # identity twice: w1 and w2 forward the handle, and we get our own memory back
        out = c.run("echo2", {"x": buf}, timeout_s=60, copy=False)["y"]
        buf[0] = 42.0
        assert out[0] == 42.0 and not out.flags.writeable
        # while w2 holds it for us, another run gets a copy, taken when it was sent
        again = c.run("echo2", {"x": buf}, timeout_s=60)["y"]
        buf[1] = -1.0
        assert (again[0], again[1]) == (42.0, 1.0) and out[1] == -1.0
        del out, again
        for i in range(3):  # back each time: lent again (a copy would not follow buf)
            out = c.run("echo2", {"x": buf}, timeout_s=60, copy=False)["y"]
            buf[2] = i
            assert out[2] == i
            del out
        none_leased(c, "w1", "w2")
    with secure.client() as c:  # the same from submit(), in the client's I/O thread
        buf = c.shared_array(MIB_4)
        for i in range(3):
            fut = c.submit("echo2", {"x": buf}, copy=False)
            out = fut.result(timeout=60)["y"]
            buf[3] = i
            assert out[3] == i
            del out, fut
        for w in ("w1", "w2"):
            wait_for(lambda w=w: shm(c, w)["forwarded"] == 0, f"{w} to forget its forwards")


def test_curve_roles_guard_direct_inputs(secure: LocalCluster) -> None:
    w1_inbox, w2_inbox = inbox(secure, "w1"), inbox(secure, "w2")
    as_worker = dial(secure, w1_inbox, as_name="w2", server="w1")
    as_client = dial(secure, w2_inbox, as_name="client", server="w2")
    try:
        # a graph input (a client's) from a worker's key
        msg = DataMsg(**hdr(), graph="chain", run=new_id(), node="a")
        got = ask(as_worker, msg, {"x": X})
        assert got is not None and isinstance(got.msg, ErrorMsg), got
        assert got.msg.code == ErrorCode.UNAUTHORIZED and got.msg.reply_to == msg.id, got.msg
        # an edge input (b.x is fed by w1) from a client's key
        msg = DataMsg(**hdr(), graph="chain", run=new_id(), node="b")
        got = ask(as_client, msg, {"x": X})
        assert got is not None and isinstance(got.msg, ErrorMsg), got
        assert got.msg.code == ErrorCode.UNAUTHORIZED and got.msg.field == "x", got.msg
    finally:
        as_worker.close(0)
        as_client.close(0)
    with secure.client() as c:
        np.testing.assert_array_equal(c.run("chain", {"x": X}, timeout_s=30)["y"], expected(X))


def test_sixteen_direct_runs_in_flight(secure: LocalCluster) -> None:
    # 1 KiB (frames) and 256 KiB (shared memory) inputs, each with its own values
    inputs = [np.full(KIB_1 if i % 2 else 64 * 1024, i, np.float32) + np.arange(
        KIB_1 if i % 2 else 64 * 1024, dtype=np.float32) for i in range(16)]
    with secure.client() as c:
        futures = [c.submit("chain", {"x": x}, timeout_s=60) for x in inputs]
        for x, fut in zip(inputs, futures, strict=True):
            np.testing.assert_array_equal(fut.result(timeout=90)["y"], expected(x))
        none_leased(c, "w1", "w2")


# --- 4, 8: lost workers ----------------------------------------------------------------------

def test_consumer_killed_holding_a_segment_gives_it_back(insecure: LocalCluster) -> None:
    with insecure.client() as c, insecure.client() as spy:
        x = np.random.default_rng(4).standard_normal(MIB_4).astype(np.float32)
        fut = c.submit("lost_v1", {"x": x}, timeout_s=60)
        wait_for(lambda: outstanding_is(spy, "lost_v1", {"b": "v1"}), "node b to be running")
        # a's output sits in w1's pool, leased to v1 while v1 sleeps on it
        wait_for(lambda: shm(spy, "w1")["leased"] >= 1, "w1 to lease a segment to v1")
        insecure.kill_worker("v1", signal.SIGKILL)
        with pytest.raises(WorkerLostError) as err:
            fut.result(timeout=60)
        assert err.value.worker == "v1" and err.value.node == "b", err.value
        none_leased(spy, "w1")  # reclaimed on the coordinator's cancel


def test_lost_worker_fails_a_blocking_direct_run(insecure: LocalCluster) -> None:
    outcome: list[BaseException | None] = []
    with insecure.client() as c, insecure.client() as spy:

        def blocking_run() -> None:
            try:
                c.run("lost_v2", {"x": X}, timeout_s=60)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
        t = threading.Thread(target=blocking_run)
        t.start()
        try:
            wait_for(lambda: outstanding_is(spy, "lost_v2", {"b": "v2"}), "node b to be running")
            insecure.kill_worker("v2", signal.SIGKILL)
        finally:
            t.join(90)
    assert len(outcome) == 1 and isinstance(outcome[0], WorkerLostError), outcome
    assert outcome[0].worker == "v2" and outcome[0].node == "b"


def test_forwarded_segment_is_forgotten_when_its_consumer_dies(insecure: LocalCluster) -> None:
    # w1.identity outputs a view of the client's segment: w1 forwards that segment to v3
    with insecure.client() as c, insecure.client() as spy:
        x = np.random.default_rng(5).standard_normal(MIB_4).astype(np.float32)
        fut = c.submit("lost_v3", {"x": x}, timeout_s=60)
        wait_for(lambda: outstanding_is(spy, "lost_v3", {"b": "v3"}), "node b to be running")
        wait_for(lambda: shm(spy, "w1")["forwarded"] >= 1, "w1 to forward the segment to v3")
        insecure.kill_worker("v3", signal.SIGKILL)
        with pytest.raises(WorkerLostError):
            fut.result(timeout=60)
        wait_for(lambda: shm(spy, "w1")["forwarded"] == 0, "w1 to forget the forward",
                 timeout_s=10)


# --- 5-7: a rogue peer speaking the protocol by hand ---------------------------------------------

def test_forged_and_stale_handles_are_refused_and_the_worker_serves_on(
        insecure: LocalCluster) -> None:
    n = 64 * 1024  # 256 KiB of float32
    data = np.arange(n, dtype=np.float32)
    rogue = dial(insecure, inbox(insecure, "w1"))
    try:
        with tempfile.TemporaryFile() as regular, SegmentPool(max_bytes=8 * MIB) as pool:
            regular.write(b"\0" * (64 + data.nbytes))
            regular.flush()
            token = secrets.token_hex(16)
            forged = {"token": token, "pid": os.getpid(), "fd": regular.fileno(), "off": 64,
                      "len": data.nbytes, "gen": 1}
            msg = DataMsg(**hdr(), graph="echo", run=new_id(), node="a")
            got = ask(rogue, msg, shared={"x": ("float32", [n], forged)})
            assert got is not None and isinstance(got.msg, ErrorMsg), got
            assert got.msg.code == ErrorCode.BAD_HANDLE and got.msg.reply_to == msg.id, got.msg
            assert token not in got.msg.message

            # a real segment of ours: accepted, the output comes back, the handle is released
            handle = pool.write(data, holder="w1")
            msg = DataMsg(**hdr(), graph="echo", run=new_id(), node="a")
            rogue.send_multipart(encode(msg, shared={"x": ("float32", [n], handle.to_wire())}))
            output, released = None, None
            while output is None or released is None:
                env = recv(rogue)
                assert env is not None, f"got output {output is not None}, release " \
                                        f"{released is not None}, then nothing"
                if isinstance(env.msg, DataMsg) and env.msg.run == msg.run:
                    output = env
                elif isinstance(env.msg, ControlMsg) and env.msg.action == "release":
                    released = env.msg
                else:
                    raise AssertionError(f"unexpected {env.msg!r}")
            np.testing.assert_array_equal(output.arrays["y"], data)
            assert released.run == msg.run
            assert released.args["handles"] == [handle.to_wire()]

            # the segment is leased again (its generation moves): the old handle is stale
            pool.release(handle, holder="w1")
            again = pool.write(np.zeros(n, np.float32), holder="w1")
            assert (again.token, again.gen) == (handle.token, handle.gen + 1)
            msg = DataMsg(**hdr(), graph="echo", run=new_id(), node="a")
            got = ask(rogue, msg, shared={"x": ("float32", [n], handle.to_wire())})
            assert got is not None and isinstance(got.msg, ErrorMsg), got
            assert got.msg.code == ErrorCode.BAD_HANDLE and got.msg.reply_to == msg.id, got.msg
            assert handle.token not in got.msg.message
    finally:
        rogue.close(0)
    with insecure.client() as c:
        np.testing.assert_array_equal(c.run("echo", {"x": data}, timeout_s=30)["y"], data)
        assert insecure.workers["w1"].poll() is None


def _routes(coord: zmq.Socket) -> dict[str, Any]:
    got = ask(coord, QueryMsg(**hdr(), what="routes", graph="chain"))
    assert got is not None and isinstance(got.msg, ReplyMsg), got
    assert got.msg.body["direct"] is True, got.msg.body
    body: dict[str, Any] = got.msg.body
    return body


def _run_direct(routes: dict[str, Any], run: str) -> RunMsg:
    return RunMsg(**hdr(), graph="chain", run=run, timeout_s=30, direct=True,
                  routes=routes["routes_id"], input_bytes=X.nbytes)


def _relayed(coord: zmq.Socket, run_msg: RunMsg) -> None:
    env = recv(coord, 30)
    assert env is not None, "no answer to the direct RUN"
    assert isinstance(env.msg, ReplyMsg) and env.msg.reply_to == run_msg.id, env.msg
    assert env.msg.body.get("relayed") is True, env.msg.body
    np.testing.assert_array_equal(env.arrays["y"], expected(X))


def test_outputs_are_relayed_to_a_client_the_output_worker_cannot_reach(
        insecure: LocalCluster) -> None:
    coord, to_w1 = dial(insecure), dial(insecure, inbox(insecure, "w1"))
    try:
        routes = _routes(coord)
        assert routes["inputs"]["x"][0]["worker"] == "w1"
        assert routes["outputs"]["y"]["worker"] == "w2"
        run = _run_direct(routes, new_id())
        coord.send_multipart(encode(run))
        to_w1.send_multipart(encode(DataMsg(**hdr(), graph="chain", run=run.run, node="a"),
                                    {"x": X}))
        _relayed(coord, run)  # we never dialled w2, so it could not send y to us
    finally:
        coord.close(0)
        to_w1.close(0)


def test_outputs_relayed_when_the_run_reaches_the_coordinator_last(
        insecure: LocalCluster) -> None:
    coord, to_w1 = dial(insecure), dial(insecure, inbox(insecure, "w1"))
    try:
        routes = _routes(coord)
        run = _run_direct(routes, new_id())
        to_w1.send_multipart(encode(DataMsg(**hdr(), graph="chain", run=run.run, node="a"),
                                    {"x": X}))
        time.sleep(0.3)  # both nodes are done before the coordinator hears of the run
        coord.send_multipart(encode(run))
        _relayed(coord, run)
    finally:
        coord.close(0)
        to_w1.close(0)


def test_outputs_sent_direct_when_the_run_reaches_the_coordinator_last(
        insecure: LocalCluster) -> None:
    """The client's two DEALERs share one routing id, so w2 sends y straight to us; the
    coordinator applies the early DONEs when the RUN comes and ends the run as done."""
    routing_id = secrets.token_bytes(16)
    socks = []
    for worker in ("w1", "w2"):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.connect(inbox(insecure, worker))
        socks.append(sock)
    to_w1, to_w2 = socks
    coord = dial(insecure)
    try:
        ping = ControlMsg(**hdr(), action="ping")  # w2 learns our routing id
        got = ask(to_w2, ping)
        assert got is not None and got.msg.reply_to == ping.id, got
        routes = _routes(coord)
        run = _run_direct(routes, new_id())
        to_w1.send_multipart(encode(DataMsg(**hdr(), graph="chain", run=run.run, node="a"),
                                    {"x": X}))
        env = recv(to_w2, 30)
        assert env is not None and isinstance(env.msg, DataMsg), env
        assert (env.msg.run, env.msg.node) == (run.run, "b"), env.msg
        np.testing.assert_array_equal(env.arrays["y"], expected(X))
        assert set(env.msg.timings or {}) == {"a", "b"}, env.msg.timings
        time.sleep(0.3)  # b's DONE is at the coordinator before the RUN
        coord.send_multipart(encode(run))
        with insecure.client() as c:
            ended = wait_for(lambda: run_of(c, run.run), "the coordinator to end the run")
        assert ended["state"] == "done", ended
        assert recv(coord, 0) is None  # a direct run's success sends the client nothing
    finally:
        for sock in (*socks, coord):
            sock.close(0)
