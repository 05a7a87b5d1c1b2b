"""Adversarial tests: a rogue peer holding an allow-listed key attacks a live cluster.

Each test plays one attack of the threat model (protocol/SPEC.md section 13.1) on real
sockets against real coordinator and worker processes, checks that it fails exactly as
the authority table (13.3) says (the ERROR code and field, or nothing at all where the
table says *dropped*), and checks that the victim's own traffic carries on with the
right numbers. The attacker speaks the wire protocol by hand through a raw DEALER
(``interop_runtime.client.testing.dial``) holding a client's or a worker's CURVE key.

One cluster (CURVE, the default) serves the whole module: w1 hosts ``scale``, w2
``add_const``; graph ``chain`` is x -> w1.scale -> w2.add_const -> y (y = 2x + 1) and
graph ``slow`` is x -> w1.scale -> w2.sleep -> y (y = 2x, after SLOW_S seconds), for
attacks that need a run in flight.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth

from interop_runtime import (
    PROTOCOL_VERSION,
    Client,
    ClusterSpec,
    ErrorCode,
    Graph,
    LocalCluster,
    WorkerLostError,
)
from interop_runtime.client.cluster import free_tcp_address
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.transport.security import generate_keys
from interop_runtime.wire.codec import decode, encode, new_id
from interop_runtime.wire.messages import (
    ControlMsg,
    DataMsg,
    DeregisterMsg,
    DoneMsg,
    ErrorMsg,
    FunctionSpec,
    GraphMsg,
    Header,
    HeartbeatMsg,
    ParamMsg,
    QueryMsg,
    RegisterMsg,
    ReplyMsg,
    RunMsg,
    TensorSpec,
)

HEARTBEAT_S = 0.5  # the coordinator declares a worker lost after 2 x 0.5 s of silence
SLOW_S = 2.0  # how long node b of graph "slow" takes: the window an attack has
SILENCE_S = 1.0  # how long "dropped" waits to be sure nothing comes back
ROGUE_CLIENT = "client-2"  # a second, honest-looking client key: the attacker's own
NOWHERE = "tcp://127.0.0.1:9"  # an endpoint a hijacked route would send data to

X = np.arange(4, dtype=np.float32)
CHAIN_Y = 2 * X + 1
SLOW_Y = 2 * X
FAKE = np.full(4, 666.0, dtype=np.float32)  # what a forged answer carries

V = {"v": PROTOCOL_VERSION}


# --- the cluster -----------------------------------------------------------------------

def _graphs() -> list[Graph]:
    chain = Graph("chain").node("a", "w1", "scale").node("b", "w2", "add_const")
    chain.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")
    slow = Graph("slow").node("a", "w1", "scale").node("b", "w2", "sleep", seconds=SLOW_S)
    slow.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")
    return [chain, slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    metrics_port = int(free_tcp_address().rsplit(":", 1)[1])
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": HEARTBEAT_S, "metrics_port": metrics_port},
        "workers": [numpy_worker("w1", "scale", "sleep", "identity"),
                    numpy_worker("w2", "add_const", "sleep", "identity")]})
    lc = LocalCluster(spec)
    try:
        # the coordinator and the inboxes read the allow-list once, at start: the
        # attacker's second client key must be on it before then
        generate_keys(lc.keys_dir, ROGUE_CLIENT)
        lc.start()
        with lc.client() as c:
            for g in _graphs():
                c.register(g)
        yield lc
    finally:
        lc.stop()


@pytest.fixture(autouse=True)
def healthy(cluster: LocalCluster) -> None:
    """Bring back any process an earlier attack killed, so that one runtime bug fails one
    test instead of every test after it. (The test that killed it has failed already.)"""
    restarted = False
    if cluster.coordinator is not None and cluster.coordinator.poll() is not None:
        cluster.restart_coordinator()  # its state is in memory: graphs go again below
        restarted = True
    for w in cluster.spec.workers:
        if cluster.workers[w.name].poll() is not None:
            cluster.start_worker(w)
    cluster.wait_ready([w.name for w in cluster.spec.workers], timeout_s=60)
    if restarted:
        with cluster.client() as c:
            for g in _graphs():
                c.register(g)


def rogue_client(cluster: LocalCluster) -> Client:
    """A full Client holding the attacker's own (allow-listed) client key."""
    return Client(cluster.address, security=cluster.security(ROGUE_CLIENT))


def chain_still_right(cluster: LocalCluster) -> None:
    """The victim's normal traffic: a run through both workers, with the right numbers."""
    with cluster.client() as c:
        out = c.run("chain", {"x": X}, timeout_s=20)
        np.testing.assert_array_equal(out["y"], CHAIN_Y)
    for name, proc in [("coordinator", cluster.coordinator), *cluster.workers.items()]:
        code = proc.poll() if proc is not None else "never started"
        assert code is None, f"{name} exited ({code})"


# --- the rogue peer --------------------------------------------------------------------

class Rogue:
    """A raw DEALER that speaks the wire protocol by hand and may send anything."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock

    def send(self, msg: Header, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.sock.send_multipart(encode(msg, arrays))

    def send_frames(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout_s: float = 10.0) -> Any | None:
        """The next decoded message, or None if nothing came within ``timeout_s``."""
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        return decode(self.sock.recv_multipart()).msg

    def ask(self, msg: Header, arrays: dict[str, np.ndarray] | None = None,
            timeout_s: float = 10.0) -> Any | None:
        self.send(msg, arrays)
        return self.recv(timeout_s)

    def close(self) -> None:
        self.sock.close(0)


class Rogues:
    """Factory of rogue peers for one test; every socket is closed at teardown."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.made: list[Rogue] = []

    def __call__(self, as_name: str, endpoint: str | None = None,
                 server: str = "coordinator") -> Rogue:
        return self.adopt(dial(self.cluster, endpoint, as_name=as_name, server=server))

    def adopt(self, sock: zmq.Socket) -> Rogue:
        self.made.append(Rogue(sock))
        return self.made[-1]

    def close(self) -> None:
        for r in self.made:
            r.close()


@pytest.fixture
def rogue(cluster: LocalCluster) -> Iterator[Rogues]:
    rogues = Rogues(cluster)
    yield rogues
    rogues.close()


def hdr() -> dict[str, Any]:
    return {**V, "id": new_id(), "src": "rogue"}


def assert_refused(reply: Any, code: ErrorCode, field: str | None = None, *,
                   reply_to: str | None = None, what: str = "") -> None:
    """``reply`` is an ERROR with ``code`` (and ``field``/``reply_to`` when given)."""
    assert reply is not None, f"{what}: no answer at all; the spec says ERROR {code}"
    assert isinstance(reply, ErrorMsg), f"{what}: got {reply.kind}, not ERROR {code}: {reply!r}"
    assert reply.code == code, f"{what}: ERROR {reply.code} (field {reply.field}), not {code}: " \
                               f"{reply.message}"
    if field is not None:
        assert reply.field == field, f"{what}: ERROR {code} names field {reply.field!r}, " \
                                     f"not {field!r}: {reply.message}"
    if reply_to is not None:
        assert reply.reply_to == reply_to, f"{what}: reply_to {reply.reply_to!r}, not the " \
                                           f"refused message's id"


def assert_silent(r: Rogue, what: str) -> None:
    """Nothing came back for what ``r`` sent. A probe sent now must be the first thing
    answered: so the connection is live (a dead one would make silence prove nothing) and
    everything sent before the probe was read, and dropped."""
    early = r.recv(0)
    assert early is None, f"{what}: answered {early!r}"
    probe = ControlMsg(**hdr(), action="ping")
    got = r.ask(probe)
    assert got is not None, f"{what}: the rogue's connection is dead; silence proves nothing"
    assert got.reply_to == probe.id, f"{what}: answered {got!r}"


def unauthorized_count(cluster: LocalCluster, code: str = "unauthorized") -> float:
    """The coordinator's interop_bad_messages{code=...}: what it refused or dropped."""
    url = f"http://127.0.0.1:{cluster.spec.coordinator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(rf'^interop_bad_messages_total\{{code="{code}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def register_msg(name: str, endpoint: str = NOWHERE) -> RegisterMsg:
    fn = FunctionSpec(name="add_const", inputs=[TensorSpec(name="x")],
                      outputs=[TensorSpec(name="y")])
    return RegisterMsg(**hdr(), name=name, plugin="numpy", endpoint=endpoint, functions=[fn])


def active_runs(c: Client, graph: str) -> list[dict[str, Any]]:
    return [r for r in c.runs()["active"] if r["graph"] == graph]


# --- 1. worker-name hijack ---------------------------------------------------------------

def test_register_hijack_of_a_live_worker_name_is_refused(cluster: LocalCluster,
                                                          rogue: Rogues) -> None:
    with cluster.client() as c:
        before = {w["name"]: (w["pid"], w["endpoint"]) for w in c.workers()}
    # w1's key may register as w1 only
    msg = register_msg("w2")
    assert_refused(rogue("w1").ask(msg), ErrorCode.UNAUTHORIZED, "name", reply_to=msg.id,
                   what="REGISTER w2 with w1's key")
    # a client key may not register at all
    msg = register_msg("w2")
    assert_refused(rogue("client").ask(msg), ErrorCode.UNAUTHORIZED, "name", reply_to=msg.id,
                   what="REGISTER w2 with a client key")
    # w2's own (stolen) key, from a second connection while w2 is alive: the name is taken
    msg = register_msg("w2")
    assert_refused(rogue("w2").ask(msg), ErrorCode.BUSY, "name", reply_to=msg.id,
                   what="REGISTER w2 with w2's key from another connection")
    # nor may a worker's key act as a client (QUERY workers/status and ping are open to all)
    as_w1 = rogue("w1")
    client_requests: list[tuple[Header, dict[str, np.ndarray] | None]] = [
        (RunMsg(**hdr(), graph="chain", run=new_id()), {"x": X}),
        (QueryMsg(**hdr(), what="runs"), None),
        (QueryMsg(**hdr(), what="graphs"), None),
        (GraphMsg(**hdr(), op="drop", graph="chain"), None),
        (ControlMsg(**hdr(), dst="w2", action="shutdown"), None),
        (ParamMsg(**hdr(), dst="w2", op="list"), None),
    ]
    for msg, arrays in client_requests:
        assert_refused(as_w1.ask(msg, arrays), ErrorCode.UNAUTHORIZED, reply_to=msg.id,
                       what=f"{msg.kind} from w1's key")
    with cluster.client() as c:
        after = {w["name"]: (w["pid"], w["endpoint"]) for w in c.workers()}
    assert after == before, "the worker table changed: a rogue REGISTER got through"
    chain_still_right(cluster)


# --- 2. forged DONE ------------------------------------------------------------------------

def test_forged_done_for_another_clients_run_is_dropped(cluster: LocalCluster,
                                                        rogue: Rogues) -> None:
    with cluster.client() as victim, rogue_client(cluster) as spy:
        fut = victim.submit("slow", {"x": X}, timeout_s=30)
        # the attacker learns the run id and that node b is outstanding on w2
        run = wait_for(lambda: next((r for r in active_runs(spy, "slow")
                                     if r["outstanding"] == {"b": "w2"}), None), 10,
                       "node b of the victim's run to be outstanding")
        forgers = [rogue(ROGUE_CLIENT), rogue("w1"), rogue("w2")]
        counted = unauthorized_count(cluster)
        for forger in forgers:
            # a finished node b carrying a fake graph output, and a failed one
            forger.send(DoneMsg(**hdr(), graph="slow", run=run["run"], node="b"), {"y": FAKE})
            forger.send(DoneMsg(**hdr(), graph="slow", run=run["run"], node="b", ok=False,
                                code="function_failed", message="forged"))
            # a DONE for node a, which already finished (on w1)
            forger.send(DoneMsg(**hdr(), graph="slow", run=run["run"], node="a"), {"y": FAKE})
        time.sleep(SILENCE_S)
        for forger in forgers:
            assert_silent(forger, "a forged DONE")
        assert active_runs(spy, "slow"), "the victim's run ended before its real DONE"
        out = victim.wait(fut, 30)
        np.testing.assert_array_equal(out["y"], SLOW_Y)
    chain_still_right(cluster)
    # each forged DONE for the outstanding node b was dropped and counted
    assert unauthorized_count(cluster) - counted >= 2 * len(forgers)


def test_forged_data_does_not_fail_another_clients_run(cluster: LocalCluster,
                                                       rogue: Rogues) -> None:
    """DATA naming someone else's run, from a key the plan does not list as a feeder, is
    refused to its sender; the run it names carries on (it must not be a way to fail it)."""
    with cluster.client() as victim, rogue_client(cluster) as spy:
        fut = victim.submit("slow", {"x": X}, timeout_s=30)
        run = wait_for(lambda: next(iter(active_runs(spy, "slow")), None), 10,
                       "the victim's run to be in flight")
        forger = rogue(ROGUE_CLIENT, inbox(cluster, "w2"), server="w2")
        for node, name in (("b", "x"), ("b", "bogus")):
            msg = DataMsg(**hdr(), graph="slow", run=run["run"], node=node)
            assert_refused(forger.ask(msg, {name: FAKE}), ErrorCode.UNAUTHORIZED,
                           reply_to=msg.id, what="DATA for another client's run")
        np.testing.assert_array_equal(victim.wait(fut, 30)["y"], SLOW_Y)
    chain_still_right(cluster)


def test_coordinator_forwards_no_coordinator_only_action(cluster: LocalCluster,
                                                         rogue: Rogues) -> None:
    """A client key may not get plan, cancel, pause, resume, load, unload or shutdown sent
    to a worker through the coordinator: they would reroute or stop it for everyone."""
    as_client = rogue(ROGUE_CLIENT)
    evil_plan = {"graph": "chain", "version": 999, "worker": "w2", "nodes": [{
        "node": "b", "function": "identity", "inputs": ["x"],
        "routes": {"y": [{"worker": "evil", "endpoint": NOWHERE, "node": "z", "input": "x"}]}}]}
    for action, extra in (("plan", {"graph": "chain", "args": {"plan": evil_plan}}),
                          ("cancel", {"graph": "chain"}), ("pause", {}), ("resume", {}),
                          ("load", {}), ("unload", {}), ("shutdown", {})):
        msg = ControlMsg(**hdr(), dst="w2", action=action, **extra)
        assert_refused(as_client.ask(msg), ErrorCode.UNAUTHORIZED, "action", reply_to=msg.id,
                       what=f"CONTROL {action} forwarded to w2")
    assert cluster.workers["w2"].poll() is None
    chain_still_right(cluster)


# --- 3. forged REPLY -----------------------------------------------------------------------

def test_forged_reply_to_a_forwarded_request_is_dropped(cluster: LocalCluster,
                                                        rogue: Rogues) -> None:
    with cluster.client() as victim:
        call = ControlMsg(**hdr(), dst="w2", action="invoke", function="sleep",
                          args={"seconds": 1.5})
        fut = victim.request_async(call, {"x": X})
        time.sleep(0.3)  # the coordinator has forwarded it; w2 is sleeping on it
        forgers = [rogue(ROGUE_CLIENT), rogue("w1"), rogue("w2")]
        counted = unauthorized_count(cluster) + unauthorized_count(cluster, "stale_reply")
        for forger in forgers:
            # guessed ids, and the victim's own request id (say it leaked)
            for reply_to in [*(new_id() for _ in range(100)), call.id]:
                forger.send(ReplyMsg(**hdr(), reply_to=reply_to, body={"compute_us": 1}),
                            {"y": FAKE})
                forger.send(ErrorMsg(**hdr(), reply_to=reply_to, code="function_failed",
                                     message="forged"))
        time.sleep(SILENCE_S)
        for forger in forgers:
            assert_silent(forger, "a forged REPLY/ERROR")
        env = victim.wait(fut, 20)
        assert isinstance(env.msg, ReplyMsg) and env.msg.src == "w2", env.msg
        np.testing.assert_array_equal(env.arrays["y"], X)
    chain_still_right(cluster)
    # 13.3: a dropped reply is counted, so that an operator sees id guessing: "stale_reply"
    # for an id no request has, "unauthorized" for the right id from the wrong connection;
    # 2 x 101 forgeries from each forger
    forged = 2 * 101 * len(forgers)
    counted = (unauthorized_count(cluster) + unauthorized_count(cluster, "stale_reply")
               - counted)
    assert counted >= forged, f"{forged} forged REPLY/ERROR dropped, {counted:.0f} counted"


# --- 4. spoofed heartbeats -----------------------------------------------------------------

def test_spoofed_heartbeats_neither_pass_nor_keep_a_dead_worker_alive(
        cluster: LocalCluster, rogue: Rogues) -> None:
    spoofers = {"w2's stolen key": rogue("w2"), "w1's key": rogue("w1"),
                "a client key": rogue("client")}
    for who, r in spoofers.items():
        for session in (None, new_id()):
            beat = HeartbeatMsg(**hdr(), name="w2", session=session)
            assert_refused(r.ask(beat), ErrorCode.UNAUTHORIZED, "session", reply_to=beat.id,
                           what=f"HEARTBEAT w2 from {who}, session {session}")
    spoofer = spoofers["w2's stolen key"]
    # only the connection that registered w2 may say it leaves: dropped, w2 stays alive
    for r in spoofers.values():
        r.send(DeregisterMsg(**hdr(), name="w2", reason="forged"))
        assert_silent(r, "a forged DEREGISTER")
    time.sleep(3 * HEARTBEAT_S)
    with cluster.client() as c:
        assert next(w for w in c.workers() if w["name"] == "w2")["alive"], \
            "a forged DEREGISTER took w2 out"
    w2_spec = next(w for w in cluster.spec.workers if w.name == "w2")
    try:
        cluster.kill_worker("w2")
        killed = time.monotonic()
        codes: set[str] = set()
        with cluster.client() as victim:
            fut = None
            # the rogue beats for w2 ten times a second, before and during the run
            while time.monotonic() - killed < 15:
                spoofer.send(HeartbeatMsg(**hdr(), name="w2", session=new_id()))
                if fut is None and time.monotonic() - killed > 0.3:
                    fut = victim.submit("chain", {"x": X}, timeout_s=30)
                if fut is not None and fut.done():
                    break
                time.sleep(0.1)
            assert fut is not None and fut.done(), \
                "a run needing killed w2 was still going 15 s after: a spoofer kept it alive"
            with pytest.raises(WorkerLostError):
                fut.result()
            assert time.monotonic() - killed < 6, "worker_lost came late"
            assert not next(w for w in victim.workers() if w["name"] == "w2")["alive"]
        while (got := spoofer.recv(0.2)) is not None:
            codes.add(getattr(got, "code", got.kind))
        # refused while the record lived, then unknown (register again) once lost
        assert ErrorCode.UNAUTHORIZED in codes, codes
        assert codes <= {ErrorCode.UNAUTHORIZED, ErrorCode.UNKNOWN_TARGET}, codes
    finally:
        cluster.start_worker(w2_spec)
        cluster.wait_ready(["w2"], timeout_s=60)
    chain_still_right(cluster)


# --- 5. other clients' runs ----------------------------------------------------------------

def test_another_clients_run_does_not_exist_for_you(cluster: LocalCluster,
                                                    rogue: Rogues) -> None:
    with cluster.client() as victim, rogue_client(cluster) as spy:
        run_id = victim.start("slow", {"x": X}, timeout_s=30)
        assert any(r["run"] == run_id for r in active_runs(spy, "slow"))
        thief = rogue(ROGUE_CLIENT)

        def attack(phase: str) -> None:
            cancel = ControlMsg(**hdr(), action="cancel", run=run_id)
            assert_refused(thief.ask(cancel), ErrorCode.UNKNOWN_TARGET, "run",
                           reply_to=cancel.id, what=f"cancel another's run ({phase})")
            query = QueryMsg(**hdr(), what="result", run=run_id)
            assert_refused(thief.ask(query), ErrorCode.UNKNOWN_TARGET, "run",
                           reply_to=query.id, what=f"QUERY result of another's run ({phase})")
            query = QueryMsg(**hdr(), what="result", run=run_id, epoch=new_id())
            assert_refused(thief.ask(query), ErrorCode.UNKNOWN_TARGET, "run",
                           reply_to=query.id, what=f"QUERY result with an epoch ({phase})")
            steal = RunMsg(**hdr(), graph="chain", run=run_id)
            assert_refused(thief.ask(steal, {"x": X}), ErrorCode.BAD_HEADER, "run",
                           reply_to=steal.id, what=f"RUN under another's run id ({phase})")

        attack("in flight")
        wait_for(lambda: not any(r["run"] == run_id for r in active_runs(spy, "slow")), 20,
                 "the victim's run to finish")
        attack("finished, not yet collected")
        out = victim.result(run_id)
        np.testing.assert_array_equal(out["y"], SLOW_Y)
    chain_still_right(cluster)


# --- 6. a worker inbox obeys only the coordinator ----------------------------------------

def test_worker_inbox_refuses_coordinator_only_requests(cluster: LocalCluster,
                                                        rogue: Rogues) -> None:
    endpoint = inbox(cluster, "w2")
    as_client = rogue("client", endpoint, server="w2")
    as_w1 = rogue("w1", endpoint, server="w2")
    # a plan that would send node b's output to the attacker instead of the graph
    evil_plan = {"graph": "chain", "version": 999, "worker": "w2", "nodes": [{
        "node": "b", "function": "identity", "inputs": ["x"],
        "routes": {"y": [{"worker": "evil", "endpoint": NOWHERE, "node": "z", "input": "x"}]},
        "feeders": {"x": []}}]}
    refused: list[tuple[str, Header, dict[str, np.ndarray] | None, str]] = [
        ("CONTROL plan", ControlMsg(**hdr(), action="plan", graph="chain",
                                    args={"plan": evil_plan}), None, "action"),
        ("CONTROL shutdown", ControlMsg(**hdr(), action="shutdown"), None, "action"),
        ("CONTROL unload", ControlMsg(**hdr(), action="unload"), None, "action"),
        ("CONTROL load", ControlMsg(**hdr(), action="load"), None, "action"),
        ("CONTROL pause", ControlMsg(**hdr(), action="pause"), None, "action"),
        ("CONTROL cancel", ControlMsg(**hdr(), action="cancel", graph="chain"), None, "action"),
        ("PARAM set", ParamMsg(**hdr(), op="set"), {"w": X}, "op"),
    ]
    for what, msg, arrays, field in refused:
        assert_refused(as_client.ask(msg, arrays), ErrorCode.UNAUTHORIZED, field,
                       reply_to=msg.id, what=f"{what} on w2's inbox from a client key")
    # inbox requests are for clients: not for another worker's key
    invoke = ControlMsg(**hdr(), action="invoke", function="identity")
    assert_refused(as_w1.ask(invoke, {"x": X}), ErrorCode.UNAUTHORIZED, reply_to=invoke.id,
                   what="CONTROL invoke on w2's inbox from w1's key")
    # DATA from a key that the plan does not name as a feeder, for a run nobody started
    data = DataMsg(**hdr(), graph="chain", run=new_id(), node="b")
    reply = as_client.ask(data, {"x": X})
    assert_refused(reply, ErrorCode.UNAUTHORIZED, "x", reply_to=data.id,
                   what="DATA for node b from a client key")
    assert reply.node == "b", reply
    # a source-node trigger (DATA without tensors) comes only from the coordinator
    trigger = DataMsg(**hdr(), graph="chain", run=new_id(), node="b")
    assert_refused(as_client.ask(trigger), ErrorCode.UNAUTHORIZED, reply_to=trigger.id,
                   what="DATA without tensors on an inbox from a client key")
    # coordinator kinds are not for an inbox, and nobody answers an inbox's REPLY/ERROR
    for msg in (register_msg("w2", endpoint), HeartbeatMsg(**hdr(), name="w2"),
                DoneMsg(**hdr(), graph="chain", run=new_id(), node="b"),
                QueryMsg(**hdr(), what="status")):
        assert_refused(as_client.ask(msg), ErrorCode.UNKNOWN_KIND, "kind", reply_to=msg.id,
                       what=f"{msg.kind} on w2's inbox")
    as_client.send(ReplyMsg(**hdr(), reply_to=new_id()), {"y": FAKE})
    as_client.send(ErrorMsg(**hdr(), reply_to=new_id(), code="internal", message="forged"))
    assert_silent(as_client, "a REPLY/ERROR on w2's inbox")
    # nor is DATA fed into runs through the coordinator
    data = DataMsg(**hdr(), graph="chain", run=new_id(), node="b")
    assert_refused(rogue("client").ask(data, {"x": X}), ErrorCode.UNSUPPORTED, reply_to=data.id,
                   what="DATA to the coordinator")
    # w2 is still up, loaded, not paused, and its plan is the coordinator's
    ping = ControlMsg(**hdr(), action="ping")
    assert as_client.ask(ping).body["name"] == "w2"
    chain_still_right(cluster)
    with cluster.client() as c:  # and the run shows no trace of the attempts
        out = c.run("chain", {"x": X + 1}, timeout_s=20)
        np.testing.assert_array_equal(out["y"], 2 * (X + 1) + 1)


# --- 7. CURVE fails closed -----------------------------------------------------------------

def test_coordinator_refuses_to_bind_without_authentication(tmp_path: Path) -> None:
    _, secret = generate_keys(tmp_path / "keys", "coordinator", authorize=False)
    base = [sys.executable, "-m", "interop_runtime", "coordinator", "start", "--state",
            ":memory:", "--bind"]
    cases = {  # what -> (arguments, a phrase the refusal must contain)
        "a key but no allow-list, off loopback": (
            ["tcp://0.0.0.0:0", "--key", str(secret)], "allow-list"),
        "no key, no --insecure, off loopback": (["tcp://0.0.0.0:0"], ""),
        "no key, no --insecure, on loopback": (["tcp://127.0.0.1:0"], ""),
        "--insecure off loopback": (["tcp://0.0.0.0:0", "--insecure"], ""),
    }
    # in parallel: each is a Python start-up; one that does not refuse would serve forever
    procs = {what: subprocess.Popen([*base, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for what, (args, _) in cases.items()}
    problems = []
    for what, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            problems.append(f"{what}: it started and served (no refusal within 60 s)")
            continue
        phrase = cases[what][1]
        if proc.returncode == 0:
            problems.append(f"{what}: exit code 0")
        elif phrase not in output:
            problems.append(f"{what}: refusal does not mention {phrase!r}: {output[-300:]}")
    assert not problems, "\n".join(problems)


# --- 8. one message must not kill a process ------------------------------------------------

DEEP = b"\x91" * 999 + b"\x90"  # 1,000 nested arrays, written by hand


def _packed(head: dict[str, Any], deep: bool = False) -> bytes:
    raw = msgpack.packb({**V, "id": new_id(), **head}, use_bin_type=True)
    # splice a value msgpack.packb would refuse to nest in place of a marker string
    return raw.replace(msgpack.packb("__DEEP__"), DEEP) if deep else raw


def _tensor_msg(shape: list[int]) -> list[bytes]:
    meta = {"name": "x", "dtype": "float32", "shape": shape, "frame": 1}
    head = {"kind": "data", "graph": "chain", "run": new_id(), "node": "a", "tensors": [meta]}
    return [_packed(head), b"\x00" * 4]


def _graph_msg(args: dict[str, Any], deep: bool = False) -> list[bytes]:
    spec = {"name": "evil", "nodes": {"a": {"worker": "w1", "function": "scale", "args": args}},
            "inputs": {"x": "a.x"}, "outputs": {"y": "a.y"}}
    return [_packed({"kind": "graph", "op": "register", "spec": spec}, deep)]


def _invoke_msg(args: dict[str, Any]) -> list[bytes]:
    meta = {"name": "x", "dtype": "float32", "shape": [4], "frame": 1}
    head = {"kind": "control", "dst": "w2", "action": "invoke", "function": "identity",
            "args": args, "tensors": [meta]}
    return [_packed(head), X.tobytes()]


def _run_msg(timeout_s: float) -> list[bytes]:
    meta = {"name": "x", "dtype": "float32", "shape": [4], "frame": 1}
    head = {"kind": "run", "graph": "chain", "run": new_id(), "timeout_s": timeout_s,
            "tensors": [meta]}
    return [_packed(head), X.tobytes()]


ARGS = "spec.nodes.a.args"
POISON: dict[str, tuple[list[bytes], ErrorCode, str]] = {  # frames, code, field (prefix)
    "65 dimensions": (_tensor_msg([1] * 65), ErrorCode.BAD_HEADER, "tensors.0.shape"),
    "300 dimensions of 2**64-1": (_tensor_msg([2**64 - 1] * 300), ErrorCode.BAD_HEADER,
                                  "tensors.0.shape"),
    "a dimension of 2**64-1": (_tensor_msg([2**64 - 1, 1]), ErrorCode.BAD_HEADER,
                               "tensors.0.shape.0"),
    "2**63 elements": (_tensor_msg([2**62, 2]), ErrorCode.BAD_HEADER, "tensors.0"),
    "node args holding bin": (_graph_msg({"blob": b"\x00\x01"}), ErrorCode.BAD_HEADER,
                              f"{ARGS}.blob"),
    "node args holding ext": (_graph_msg({"blob": msgpack.ExtType(42, b"xx")}),
                              ErrorCode.BAD_HEADER, f"{ARGS}.blob"),
    "node args holding a timestamp": (_graph_msg({"when": msgpack.Timestamp(0)}),
                                      ErrorCode.BAD_HEADER, f"{ARGS}.when"),
    "node args 1,000 deep": (_graph_msg({"deep": "__DEEP__"}, deep=True),
                             ErrorCode.BAD_HEADER, f"{ARGS}.deep"),
    "invoke args holding bin": (_invoke_msg({"blob": b"\x00"}), ErrorCode.BAD_HEADER,
                                "args.blob"),
    "RUN timeout_s NaN": (_run_msg(math.nan), ErrorCode.BAD_HEADER, "timeout_s"),
    "RUN timeout_s inf": (_run_msg(math.inf), ErrorCode.BAD_HEADER, "timeout_s"),
}


@pytest.mark.parametrize("target", ["coordinator", "w2"])
def test_poison_messages_get_a_typed_error_and_the_process_serves_on(
        cluster: LocalCluster, rogue: Rogues, target: str) -> None:
    r = rogue("client") if target == "coordinator" else \
        rogue("client", inbox(cluster, target), server=target)
    problems = []
    for what, (frames, code, field) in POISON.items():
        r.send_frames(frames)
        reply = r.recv(10)
        if reply is None:
            problems.append(f"{what}: no answer (process {target} alive: "
                            f"{_alive(cluster, target)})")
        elif not isinstance(reply, ErrorMsg) or reply.code != code or \
                not (reply.field or "").startswith(field):
            problems.append(f"{what}: got {getattr(reply, 'code', reply.kind)} field "
                            f"{getattr(reply, 'field', None)!r}, want {code} field {field}...")
    assert _alive(cluster, target), f"{target} exited"
    # the same connection is served next
    ping = ControlMsg(**hdr(), action="ping")
    assert r.ask(ping) is not None, f"{target} stopped answering"
    assert not problems, "\n".join(problems)
    chain_still_right(cluster)


def _alive(cluster: LocalCluster, name: str) -> bool:
    proc = cluster.coordinator if name == "coordinator" else cluster.workers[name]
    return proc is not None and proc.poll() is None


# --- 9. stranger keys ----------------------------------------------------------------------

def test_strangers_get_no_answer_at_all(cluster: LocalCluster, rogue: Rogues,
                                        tmp_path: Path) -> None:
    _, stranger_secret = generate_keys(tmp_path, "stranger", authorize=False)
    public, secret = zmq.auth.load_certificate(str(stranger_secret))
    keys = cluster.keys_dir
    endpoints = {"coordinator": cluster.address, "w2": inbox(cluster, "w2")}
    socks: dict[str, zmq.Socket] = {}
    for server, endpoint in endpoints.items():
        for how in ("stranger key", "plain text"):
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if how == "stranger key":
                sock.curve_publickey, sock.curve_secretkey = public, secret
                sock.curve_serverkey = zmq.auth.load_certificate(str(keys / f"{server}.key"))[0]
            rogue.adopt(sock)
            sock.connect(endpoint)
            socks[f"{how} to {server}"] = sock
    for sock in socks.values():  # requests every allow-listed peer would get answered
        sock.send_multipart(encode(QueryMsg(**hdr(), what="status")))
        sock.send_multipart(encode(ControlMsg(**hdr(), action="ping")))
    time.sleep(1.5)
    answered = [what for what, sock in socks.items() if sock.poll(0)]
    assert not answered, f"answered: {answered}"
    chain_still_right(cluster)


# --- 10. floods stay bounded ---------------------------------------------------------------

def test_register_flood_from_a_client_key_is_refused_and_grows_nothing(
        cluster: LocalCluster, rogue: Rogues) -> None:
    r = rogue("client")
    codes: dict[tuple[str, str | None], int] = {}
    batch = 250
    for start in range(0, 3000, batch):
        for i in range(start, start + batch):
            r.send(register_msg(f"fake-{i}", endpoint=f"tcp://127.0.0.1:{10_000 + i}"))
        for _ in range(batch):
            got = r.recv(10)
            assert got is not None, "the coordinator stopped answering the flood"
            key = (getattr(got, "code", got.kind), getattr(got, "field", None))
            codes[key] = codes.get(key, 0) + 1
    assert codes == {(ErrorCode.UNAUTHORIZED, "name"): 3000}, codes
    with cluster.client() as c:
        assert sorted(w["name"] for w in c.workers()) == ["w1", "w2"]
        assert c.status()["workers_dead"] == 0
    chain_still_right(cluster)


def test_unread_query_flood_does_not_stall_the_coordinator(cluster: LocalCluster,
                                                           rogue: Rogues) -> None:
    r = rogue("client")
    r.sock.setsockopt(zmq.SNDHWM, 10_000)
    for _ in range(5000):  # and never read a reply
        r.send(QueryMsg(**hdr(), what="status"))
    with cluster.client(timeout_s=5) as c:
        t0 = time.monotonic()
        c.status()  # while the flood's replies sit unread
        during = time.monotonic() - t0
    time.sleep(0.5)
    assert r.sock.poll(0), "the flood never reached the coordinator"
    r.close()  # with up to a thousand replies queued for it, unread
    with cluster.client(timeout_s=5) as c:
        t0 = time.monotonic()
        c.status()
        after = time.monotonic() - t0
    assert during < 3 and after < 2, f"status took {during:.2f}s during, {after:.2f}s after"
    chain_still_right(cluster)
