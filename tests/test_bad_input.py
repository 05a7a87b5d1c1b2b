"""Every kind of bad input gets a typed ERROR reply, and the process goes on serving."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from interop_runtime import PROTOCOL_VERSION, ErrorCode, Graph
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.wire.codec import decode, encode, header_bytes
from interop_runtime.wire.messages import ControlMsg, DataMsg, QueryMsg, RunMsg

LIMIT = 1 << 20  # the coordinator's configured message size limit in these tests


@pytest.fixture(scope="module")
def cluster():
    from interop_runtime import ClusterSpec, LocalCluster

    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5, "max_message_bytes": LIMIT},
        "workers": [numpy_worker("w1", "scale"), numpy_worker("w2", "identity")]})
    with LocalCluster(spec) as lc:
        with lc.client() as c:
            g = Graph("chain").node("a", "w1", "scale").node("b", "w2", "identity")
            g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")
            c.register(g)
        yield lc


@pytest.fixture
def raw(cluster):
    socks: list[zmq.Socket] = []

    def connect(address: str) -> zmq.Socket:
        # a client of the cluster that speaks the protocol by hand (with its CURVE key)
        server = "coordinator" if address == cluster.address else next(
            w for w in ("w1", "w2") if address == inbox(cluster, w))
        s = dial(cluster, address, server=server)
        socks.append(s)
        return s
    yield connect
    for s in socks:
        s.close(0)


def exchange(sock: zmq.Socket, frames: list) -> object:
    sock.send_multipart(frames)
    assert sock.poll(10_000), "no reply within 10 s"
    return decode(sock.recv_multipart()).msg


def good_query() -> list:
    return encode(QueryMsg(v=PROTOCOL_VERSION, id="q", what="status"))


def data_frames(**over) -> list:
    msg = DataMsg(v=PROTOCOL_VERSION, id="d1", graph="chain", run="r1", node="a")
    frames = encode(msg, {"x": np.ones(4, np.float32)})
    if over:
        head = msgpack.unpackb(frames[0])
        head.update(over)
        frames[0] = msgpack.packb(head)
    return frames


def header(**fields) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "id": "m1", **fields})


BAD_INPUTS = {
    "garbage bytes": ([b"\xc1\xff\x00garbage"], ErrorCode.BAD_FRAME),
    "header not a map": ([msgpack.packb([1, 2, 3])], ErrorCode.BAD_FRAME),
    "truncated multipart": (data_frames()[:1], ErrorCode.BAD_FRAME),
    "header fails validation": ([header(kind="run", graph=5)], ErrorCode.BAD_HEADER),
    "wrong protocol version": ([msgpack.packb({"v": 99, "id": "x", "kind": "query",
                                               "what": "status"})], ErrorCode.VERSION),
    "unknown kind": ([header(kind="teleport")], ErrorCode.UNKNOWN_KIND),
    "tensor bytes disagree with dtype x shape": (
        [data_frames()[0], b"\x00" * 15], ErrorCode.BAD_TENSOR),
    "unknown dtype": (data_frames(tensors=[{"name": "x", "dtype": "float8", "shape": [4],
                                            "frame": 1}]), ErrorCode.BAD_TENSOR),
    "over the size limit": ([header(kind="query", what="status"), b"\x00" * (LIMIT + 1)],
                            ErrorCode.TOO_LARGE),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_coordinator_answers_bad_input_and_keeps_serving(cluster, raw, case) -> None:
    frames, code = BAD_INPUTS[case]
    sock = raw(cluster.address)
    reply = exchange(sock, frames)
    assert reply.kind == "error" and reply.code == code, reply
    assert reply.message
    # the same socket gets a good answer next
    assert exchange(sock, good_query()).kind == "reply"


@pytest.mark.parametrize("case", [c for c in BAD_INPUTS if c != "over the size limit"])
def test_worker_answers_bad_input_and_keeps_serving(cluster, raw, case) -> None:
    with cluster.client() as c:
        endpoint = next(w["endpoint"] for w in c.workers() if w["name"] == "w1")
    frames, code = BAD_INPUTS[case]
    sock = raw(endpoint)
    reply = exchange(sock, frames)
    assert reply.kind == "error" and reply.code == code, reply
    ping = ControlMsg(v=PROTOCOL_VERSION, id="p", action="ping")
    assert exchange(sock, encode(ping)).body["name"] == "w1"


def test_unknown_worker_node_function_graph(cluster, raw) -> None:
    coord = raw(cluster.address)
    unknown_worker = ControlMsg(v=PROTOCOL_VERSION, id="c1", dst="nobody", action="invoke",
                                function="scale")
    r = exchange(coord, encode(unknown_worker))
    assert (r.code, r.worker) == (ErrorCode.UNKNOWN_TARGET, "nobody")
    unknown_fn = ControlMsg(v=PROTOCOL_VERSION, id="c2", dst="w1", action="invoke",
                            function="warp")
    r = exchange(coord, encode(unknown_fn, {"x": np.ones(1, np.float32)}))
    assert r.code == ErrorCode.UNKNOWN_FUNCTION and "warp" in r.message
    unknown_graph = RunMsg(v=PROTOCOL_VERSION, id="r", graph="nograph", run="r9")
    r = exchange(coord, encode(unknown_graph))
    assert (r.code, r.field) == (ErrorCode.UNKNOWN_TARGET, "graph")
    wrong_input = RunMsg(v=PROTOCOL_VERSION, id="r2", graph="chain", run="r10")
    r = exchange(coord, encode(wrong_input, {"x": np.ones(4, np.int32)}))
    assert r.code == ErrorCode.DTYPE_MISMATCH
    with cluster.client() as c:
        endpoint = next(w["endpoint"] for w in c.workers() if w["name"] == "w1")
    worker = raw(endpoint)
    r = exchange(worker, data_frames(node="zz"))
    assert (r.code, r.node) == (ErrorCode.UNKNOWN_TARGET, "zz")
    r = exchange(worker, data_frames(graph="other"))
    assert (r.code, r.field) == (ErrorCode.UNKNOWN_TARGET, "graph")
    # and the cluster still runs graphs
    with cluster.client() as c:
        out = c.run("chain", {"x": np.ones(2, np.float32)})
        np.testing.assert_array_equal(out["y"], np.full(2, 2, np.float32))


def test_header_is_canonical_msgpack() -> None:
    msg = QueryMsg(v=PROTOCOL_VERSION, id="q", what="status")
    assert header_bytes(msg) == msgpack.packb({"kind": "query", "v": PROTOCOL_VERSION, "id": "q",
                                               "tensors": [], "what": "status"})
