"""The same rogue peer against a plain-text cluster (``--insecure``, loopback only).

Insecure mode trusts every local process, so what needs a key (roles, run owners, DATA
feeders) is not checked there. What the connection and the protocol alone can protect still
holds, as protocol/SPEC.md section 13.3 says: a live worker name cannot be taken over,
heartbeats need their worker's session, completions and replies count only from the
connection they are expected from, a worker inbox takes no coordinator-only request, the
coordinator forwards none, and no message kills a process.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import numpy as np
import pytest

from interop_runtime import ClusterSpec, ErrorCode, Graph, LocalCluster
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.wire.codec import decode, encode, new_id
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DoneMsg,
    ErrorMsg,
    HeartbeatMsg,
    ParamMsg,
    RegisterMsg,
    ReplyMsg,
)

X = np.arange(4, dtype=np.float32)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5, "curve": False},
        "workers": [numpy_worker("w1", "scale"), numpy_worker("w2", "add_const", "sleep")]})
    with LocalCluster(spec) as lc:
        with lc.client() as c:
            g = Graph("chain").node("a", "w1", "scale").node("b", "w2", "add_const")
            c.register(g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y"))
        yield lc


def hdr() -> dict[str, object]:
    return {"v": PROTOCOL_VERSION, "id": new_id(), "src": "rogue"}


def ask(sock: object, msg: object, arrays: dict[str, np.ndarray] | None = None,
        timeout_s: float = 5.0) -> object | None:
    sock.send_multipart(encode(msg, arrays))  # type: ignore[attr-defined]
    if not sock.poll(int(timeout_s * 1000)):  # type: ignore[attr-defined]
        return None
    return decode(sock.recv_multipart()).msg  # type: ignore[attr-defined]


def refused(answer: object, code: str, field: str | None = None) -> None:
    assert isinstance(answer, ErrorMsg), answer
    assert answer.code == code, answer
    if field is not None:
        assert answer.field == field, answer


def still_right(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        np.testing.assert_array_equal(c.run("chain", {"x": X}, timeout_s=20)["y"], 2 * X + 1)
    assert cluster.coordinator is not None and cluster.coordinator.poll() is None
    assert all(p.poll() is None for p in cluster.workers.values())


def test_connection_bound_protections_hold_in_plain_text(cluster: LocalCluster) -> None:
    rogue = dial(cluster)  # a plain-text socket: on loopback, anyone can open one
    try:
        # a live name is held by its own connection
        reg = RegisterMsg(**hdr(), name="w2", plugin="numpy", endpoint="tcp://127.0.0.1:9")
        refused(ask(rogue, reg), ErrorCode.BUSY, "name")
        # heartbeats without the worker's session renew nothing
        refused(ask(rogue, HeartbeatMsg(**hdr(), name="w2")), ErrorCode.UNAUTHORIZED,
                "session")
        # DONE and replies from a connection nobody expects them from are dropped
        rogue.send_multipart(encode(DoneMsg(**hdr(), graph="chain", run="r", node="b")))
        rogue.send_multipart(encode(ReplyMsg(**hdr(), reply_to=new_id())))
        # coordinator-only actions are not forwarded, whoever asks
        refused(ask(rogue, ControlMsg(**hdr(), dst="w2", action="shutdown")),
                ErrorCode.UNAUTHORIZED, "action")
        # and nothing came back for the dropped ones: the next answer is to a ping
        ping = ControlMsg(**hdr(), action="ping")
        answer = ask(rogue, ping)
        assert isinstance(answer, ReplyMsg) and answer.reply_to == ping.id, answer
    finally:
        rogue.close(0)
    still_right(cluster)


def test_inbox_takes_no_coordinator_only_request_in_plain_text(cluster: LocalCluster) -> None:
    rogue = dial(cluster, inbox(cluster, "w2"))
    try:
        for msg, field in ((ControlMsg(**hdr(), action="shutdown"), "action"),
                           (ControlMsg(**hdr(), action="plan", graph="chain",
                                       args={"plan": {}}), "action"),
                           (ControlMsg(**hdr(), action="unload"), "action"),
                           (ParamMsg(**hdr(), op="set"), "op")):
            refused(ask(rogue, msg, {"w": X} if isinstance(msg, ParamMsg) else None),
                    ErrorCode.UNAUTHORIZED, field)
        # a poison header gets a typed answer, and the worker serves on
        poison = msgpack.packb({"kind": "data", "v": PROTOCOL_VERSION, "id": "p", "graph": "g",
                                "run": "r", "node": "n", "tensors": [
                                    {"name": "t", "dtype": "uint8", "shape": [1] * 65,
                                     "frame": 1}]})
        rogue.send_multipart([poison, b"\x00"])
        assert rogue.poll(5000)
        refused(decode(rogue.recv_multipart()).msg, ErrorCode.BAD_HEADER)
    finally:
        rogue.close(0)
    still_right(cluster)
