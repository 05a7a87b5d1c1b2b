"""The coordinator's state machine driven with plain objects: no sockets, no processes."""

from __future__ import annotations

import numpy as np

from interop_runtime import Graph
from interop_runtime.coordinator.state.machine import CoordinatorState
from interop_runtime.wire.codec import Envelope
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DataMsg,
    DoneMsg,
    ErrorMsg,
    FunctionSpec,
    GraphMsg,
    HeartbeatMsg,
    RegisterMsg,
    ReplyMsg,
    RunMsg,
    TensorSpec,
)

V = PROTOCOL_VERSION
ID = {"w1": b"id-w1", "w2": b"id-w2"}
CLIENT = b"client"
F = FunctionSpec(name="f", inputs=[TensorSpec(name="x", dtype="float32")],
                 outputs=[TensorSpec(name="y", dtype="float32")])


SESSION: dict[str, str] = {}  # worker -> the heartbeat session its REGISTER reply gave


def setup() -> tuple[CoordinatorState, Graph]:
    st = CoordinatorState(heartbeat_s=1.0)
    for name, ident in ID.items():
        out = st.handle(ident, Envelope(RegisterMsg(v=V, id=f"r-{name}", name=name, plugin="numpy",
                                                    endpoint=f"tcp://{name}", functions=[F])), 0.0)
        assert isinstance(out[0].msg, ReplyMsg)
        SESSION[name] = out[0].msg.body["session"]
    g = Graph("chain").node("a", "w1", "f").node("b", "w2", "f").edge("a.y", "b.x")
    g.input("x", "a.x").output("y", "b.y")
    sends = st.handle(CLIENT, Envelope(GraphMsg(v=V, id="g1", op="register",
                                                spec=g.spec().model_dump())), 0.0)
    plans = [s for s in sends if isinstance(s.msg, ControlMsg)]
    assert {s.peer for s in plans} == {b"id-w1", b"id-w2"}
    replies: list = []
    for s in plans:
        replies += st.handle(s.peer, Envelope(ReplyMsg(v=V, id="ack" + s.msg.id, reply_to=s.msg.id)),
                             0.0)
    assert [r.peer for r in replies] == [CLIENT] and replies[0].msg.reply_to == "g1"
    return st, g


def test_run_goes_to_the_input_worker_and_completes_on_done() -> None:
    st, _ = setup()
    x = np.ones(3, np.float32)
    sends = st.handle(CLIENT, Envelope(RunMsg(v=V, id="run-msg", graph="chain", run="r1"),
                                       {"x": x}), 1.0)
    assert len(sends) == 1 and sends[0].peer == ID["w1"] and isinstance(sends[0].msg, DataMsg)
    assert sends[0].msg.node == "a" and sends[0].arrays["x"] is x
    assert st.runs["r1"].outstanding == {"a": "w1", "b": "w2"}
    # a completes: nothing for the client yet (its tensor went straight to w2)
    assert st.handle(ID["w1"], Envelope(DoneMsg(v=V, id="d1", graph="chain", run="r1", node="a")),
                     1.1) == []
    y = np.full(3, 4, np.float32)
    out = st.handle(ID["w2"], Envelope(DoneMsg(v=V, id="d2", graph="chain", run="r1", node="b"),
                                       {"y": y}), 1.2)
    assert len(out) == 1 and out[0].peer == CLIENT and out[0].msg.reply_to == "run-msg"
    assert out[0].arrays["y"] is y and "r1" not in st.runs


def test_lost_worker_fails_exactly_its_runs() -> None:
    st, _ = setup()
    st.handle(CLIENT, Envelope(RunMsg(v=V, id="m", graph="chain", run="r1"),
                               {"x": np.ones(1, np.float32)}), 1.0)
    st.handle(ID["w1"], Envelope(DoneMsg(v=V, id="d", graph="chain", run="r1", node="a")), 1.1)
    # w2 keeps quiet past two heartbeat intervals; w1 heartbeats
    st.handle(ID["w1"], Envelope(HeartbeatMsg(v=V, id="h", name="w1", session=SESSION["w1"])), 2.0)
    assert st.tick(1.9) == []  # one interval of silence is not death
    out = st.tick(2.1)
    errors = [s for s in out if isinstance(s.msg, ErrorMsg)]
    assert len(errors) == 1 and errors[0].peer == CLIENT
    assert (errors[0].msg.code, errors[0].msg.worker, errors[0].msg.node) == ("worker_lost", "w2", "b")
    cancels = [s for s in out if isinstance(s.msg, ControlMsg) and s.msg.action == "cancel"]
    assert [c.peer for c in cancels] == [ID["w1"]]  # the live worker drops the run's leftovers
    assert st.workers["w2"].alive is False and st.workers["w1"].alive is True


def test_heartbeat_from_unknown_worker_asks_it_to_register() -> None:
    st = CoordinatorState()
    out = st.handle(b"x", Envelope(HeartbeatMsg(v=V, id="h", name="stranger")), 0.0)
    assert out[0].msg.code == "unknown_target" and out[0].msg.field == "name"


def test_per_connection_and_global_limits() -> None:
    st, _ = setup()
    st.admission.max_runs_per_client, st.admission.max_runs_in_flight = 2, 3
    x = {"x": np.ones(1, np.float32)}

    def run(peer: bytes, run_id: str) -> list:
        return st.handle(peer, Envelope(RunMsg(v=V, id="m" + run_id, graph="chain", run=run_id), x),
                         1.0)
    assert isinstance(run(CLIENT, "r1")[0].msg, DataMsg)
    assert isinstance(run(CLIENT, "r2")[0].msg, DataMsg)
    refused = run(CLIENT, "r3")[0].msg
    assert refused.code == "busy" and "this connection" in refused.message
    assert isinstance(run(b"other", "r4")[0].msg, DataMsg)
    assert run(b"third", "r5")[0].msg.code == "busy"  # the global limit


def _register(st: CoordinatorState, g: Graph) -> None:
    sends = st.handle(CLIENT, Envelope(GraphMsg(v=V, id="g-" + g.name, op="register",
                                                spec=g.spec().model_dump())), 0.0)
    for s in [s for s in sends if isinstance(s.msg, ControlMsg)]:
        st.handle(s.peer, Envelope(ReplyMsg(v=V, id="ack" + s.msg.id, reply_to=s.msg.id)), 0.0)


def test_inputs_for_a_worker_gone_before_they_left_are_a_loss_not_a_failure() -> None:
    """A worker killed before the coordinator sent it a run's inputs (its connection closed,
    the send refused) is lost then and there, as a closed connection is found to be later:
    an idempotent run waits for it to come back and runs again; the others fail."""
    st, g = setup()
    idem = Graph("idem").node("a", "w1", "f", retries=1).input("x", "a.x").output("y", "a.y")
    _register(st, idem)
    data = {}
    for graph, run in (("idem", "r-idem"), ("chain", "r-chain")):
        sends = st.handle(CLIENT, Envelope(RunMsg(v=V, id="m-" + run, graph=graph, run=run),
                                           {"x": np.ones(1, np.float32)}), 1.0)
        (data[run],) = [s for s in sends if isinstance(s.msg, DataMsg)]
    out = st.undeliverable(data["r-idem"], gone=True)
    (err,) = [s for s in out if isinstance(s.msg, ErrorMsg)]
    assert err.peer == CLIENT and err.msg.code == "worker_lost" and err.msg.reply_to == "m-r-chain"
    assert "r-chain" not in st.runs and not st.workers["w1"].alive
    assert st.runs["r-idem"].waiting_for == "w1" and st.runs["r-idem"].attempt == 1
    # w1 comes back (a supervisor restarted it): the idempotent run is sent again
    back = st.handle(b"id-w1-new", Envelope(RegisterMsg(v=V, id="r2", name="w1", plugin="numpy",
                                                        endpoint="tcp://w1", functions=[F])), 2.0)
    for s in [s for s in back if isinstance(s.msg, ControlMsg)]:
        back += st.handle(s.peer, Envelope(ReplyMsg(v=V, id="a" + s.msg.id, reply_to=s.msg.id)),
                          2.0)
    assert [s.msg.node for s in back if isinstance(s.msg, DataMsg) and s.peer == b"id-w1-new"
            ] == ["a"]


def test_a_restarted_worker_gets_its_plan_before_its_peers_route_to_it() -> None:
    """A worker that comes back is sent its own plans first; only its acknowledgement makes
    the new routes live and sends the other workers theirs. Out of that order, a peer could
    send it DATA faster than its plan came: "no plan for graph"."""
    st, _ = setup()
    routes_before = st.graphs["chain"].routes_id
    st.handle(ID["w1"], Envelope(HeartbeatMsg(v=V, id="h", name="w1", session=SESSION["w1"])), 2.0)
    st.tick(2.5)  # w2 is silent: lost
    assert not st.workers["w2"].alive
    back = st.handle(b"id-w2-new", Envelope(RegisterMsg(v=V, id="r2", name="w2", plugin="numpy",
                                                        endpoint="tcp://w2-new", functions=[F])),
                     3.0)
    plans = [s for s in back if isinstance(s.msg, ControlMsg) and s.msg.action == "plan"]
    assert [s.peer for s in plans] == [b"id-w2-new"]  # w1 is not told of the new w2 yet
    assert st.graphs["chain"].routes_id == routes_before  # nor is any client
    # an answer from another connection, however well it guessed the id, changes nothing
    assert st.handle(ID["w1"], Envelope(ReplyMsg(v=V, id="x", reply_to=plans[0].msg.id)),
                     3.1) == []
    assert st.graphs["chain"].routes_id == routes_before
    after = st.handle(b"id-w2-new", Envelope(ReplyMsg(v=V, id="a", reply_to=plans[0].msg.id)),
                      3.2)
    assert [(s.peer, s.msg.action) for s in after] == [(ID["w1"], "plan")]  # w2's: sent once
    (w1_plan,) = after[0].msg.args["plan"]["nodes"]
    assert w1_plan["routes"]["y"][0]["endpoint"] == "tcp://w2-new"
    assert st.graphs["chain"].routes_id != routes_before


def test_a_staged_plan_nobody_acknowledges_goes_live_at_its_deadline() -> None:
    st, _ = setup()
    st.handle(ID["w1"], Envelope(HeartbeatMsg(v=V, id="h", name="w1", session=SESSION["w1"])), 2.0)
    st.tick(2.5)
    st.handle(b"id-w2-new", Envelope(RegisterMsg(v=V, id="r2", name="w2", plugin="numpy",
                                                 endpoint="tcp://w2-new", functions=[F])), 3.0)
    st.handle(ID["w1"], Envelope(HeartbeatMsg(v=V, id="h2", name="w1", session=SESSION["w1"])),
              3.0 + st.request_timeout_s)
    st.handle(b"id-w2-new", Envelope(HeartbeatMsg(v=V, id="h3", name="w2",
                                                  session=st.workers["w2"].session)),
              3.0 + st.request_timeout_s)
    out = st.tick(3.1 + st.request_timeout_s)
    assert [(s.peer, s.msg.action) for s in out if isinstance(s.msg, ControlMsg)] == [
        (ID["w1"], "plan")]
    assert not st.staged_plans and not st.staged_by_pair
