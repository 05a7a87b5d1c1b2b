"""Every table a peer can grow is bounded (protocol/SPEC.md section 13.4), driven through
the state machines without sockets, so the bounds are exact and fast to check."""

from __future__ import annotations

import numpy as np
import pytest

from interop_runtime import BusyError, Graph
from interop_runtime.coordinator.state.admission import Admission
from interop_runtime.coordinator.state.base import Limits
from interop_runtime.coordinator.state.machine import CoordinatorState
from interop_runtime.coordinator.store import Store
from interop_runtime.wire.codec import Envelope
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ErrorMsg,
    FunctionSpec,
    GraphMsg,
    QueryMsg,
    RegisterMsg,
    ReplyMsg,
    RunMsg,
    TensorSpec,
)
from interop_runtime.wire.payloads import PlanNode, WorkerPlan
from interop_runtime.worker.state import WorkerState

V = PROTOCOL_VERSION
F = FunctionSpec(name="f", inputs=[TensorSpec(name="x"), TensorSpec(name="z")],
                 outputs=[TensorSpec(name="y")])


def register(st: CoordinatorState, name: str, now: float = 0.0) -> object:
    msg = RegisterMsg(v=V, id=f"r-{name}", name=name, plugin="numpy",
                      endpoint=f"tcp://h/{name}", functions=[F])
    return st.handle(name.encode(), Envelope(msg), now)[0].msg


def test_half_fed_inputs_are_capped_in_count_and_bytes() -> None:
    st = WorkerState(max_pending=3, max_pending_bytes=1000)
    st.install(WorkerPlan(graph="g", version=1, worker="w",
                          nodes=[PlanNode(node="n", function="f", inputs=["x", "z"])]))
    for run in ("r1", "r2", "r3"):
        assert st.accept("g", run, "n", {"x": np.zeros(10, np.uint8)}, 0.0) is None
    with pytest.raises(BusyError):  # a fourth half-fed entry
        st.accept("g", "r4", "n", {"x": np.zeros(10, np.uint8)}, 0.0)
    # completing an entry is always possible, and frees its bytes
    ready = st.accept("g", "r1", "n", {"z": np.zeros(10, np.uint8)}, 0.0)
    assert ready is not None and st.pending_bytes == 20
    with pytest.raises(BusyError):  # 980 + 20 bytes would pass the byte cap
        st.accept("g", "r5", "n", {"x": np.zeros(990, np.uint8)}, 0.0)
    assert len(st.pending) == 2 and st.pending_bytes == 20
    assert st.expire(1e9) and st.pending_bytes == 0  # the TTL frees the rest


def test_dead_workers_are_pruned_and_their_names_freed() -> None:
    st = CoordinatorState(heartbeat_s=1.0, limits=Limits(max_workers=3, dead_grace_s=10.0))
    for name in ("a", "b", "c"):
        assert isinstance(register(st, name), ReplyMsg)
    refused = register(st, "d")
    assert isinstance(refused, ErrorMsg) and refused.code == "busy"
    st.tick(5.0)  # no heartbeats: all three are lost, their records kept for the grace
    assert set(st.workers) == {"a", "b", "c"} and not any(w.alive for w in st.workers.values())
    st.tick(16.0)  # past the grace period
    assert st.workers == {}
    assert isinstance(register(st, "d", 16.0), ReplyMsg)
    # the metric children of pruned workers are gone too: label sets do not grow with names
    names = {labels[0] for labels in st.metrics.worker_alive._children}
    assert names == {"d"}


def test_a_full_registry_prunes_lost_workers_before_refusing() -> None:
    st = CoordinatorState(heartbeat_s=1.0, limits=Limits(max_workers=2, dead_grace_s=1e9))
    register(st, "a")
    register(st, "b")
    st.tick(5.0)
    assert isinstance(register(st, "c", 5.0), ReplyMsg)


def test_graphs_and_waiting_requests_are_capped() -> None:
    st = CoordinatorState(limits=Limits(max_graphs=2, max_requests_per_client=1))
    register(st, "w")
    out = []
    for name in ("g1", "g2", "g3"):
        g = Graph(name).node("a", "w", "f").input("x", "a.x").input("z", "a.z").output(
            "y", "a.y")
        out.append(st.handle(b"c", Envelope(GraphMsg(v=V, id=name, op="register",
                                                     spec=g.spec().model_dump())), 0.0))
    # g1 waits for its plan ack; g2 is over the one-request-per-client bound; g3 too
    assert [type(o[0].msg).__name__ for o in out][0] == "ControlMsg"
    assert all(isinstance(o[0].msg, ErrorMsg) and o[0].msg.code == "busy" for o in out[1:])


def test_admission_counts_bytes_in_flight() -> None:
    adm = Admission(max_bytes_in_flight=100, max_bytes_per_client=60)
    adm.admit(b"a", 50)
    with pytest.raises(BusyError):
        adm.check(b"a", 20)  # 70 > this client's 60
    adm.check(b"b", 40)
    adm.admit(b"b", 40)
    with pytest.raises(BusyError):
        adm.check(b"c", 20)  # 110 > 100 in all
    adm.release(b"a", 50)
    adm.check(b"c", 20)
    assert adm.bytes_in_flight == 40 and b"a" not in adm.bytes_by_client


def test_uncollected_results_are_capped_oldest_first(caplog) -> None:
    store = Store(max_results=3, max_result_bytes=10_000)
    for i in range(5):
        store.save_result(f"r{i}", {"y": np.full(4, i, np.float32)})
    assert store.take_result("r0") is None and store.take_result("r1") is None
    assert store.take_result("r4")["y"].tolist() == [4.0] * 4
    assert "dropped the uncollected result of run r0" in caplog.text
    big = Store(max_results=100, max_result_bytes=1000)
    for i in range(4):
        big.save_result(f"b{i}", {"y": np.zeros(100, np.float32)})  # 400+ bytes each
    assert [big.take_result(f"b{i}") is not None for i in range(4)] == [False, False, True, True]


def test_query_answers_are_cut_to_fit_a_header() -> None:
    st = CoordinatorState(limits=Limits(max_reply_bytes=2000))
    for i in range(50):
        register(st, f"worker-{i:03d}")
    body = st.handle(b"c", Envelope(QueryMsg(v=V, id="q", what="workers")), 0.0)[0].msg.body
    assert 0 < len(body["workers"]) < 50 and body["truncated"] == 50 - len(body["workers"])


def test_run_deadline_must_be_finite() -> None:
    """A RUN whose deadline is NaN, infinite, zero, negative or over a week is refused by
    the receiver (models built in Python are checked when they are decoded)."""
    from interop_runtime.wire.codec import decode, encode
    from interop_runtime.wire.errors import BadHeaderError

    for bad in (float("nan"), float("inf"), 0.0, -1.0, 1e9):
        with pytest.raises(BadHeaderError, match="timeout_s"):
            decode(encode(RunMsg(v=V, id="r", graph="g", run="r", timeout_s=bad)))
