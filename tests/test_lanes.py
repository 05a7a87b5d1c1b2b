"""Same-host lanes (SPEC section 20), on real processes and real unix sockets: runs use
them, and a local attacker who finds the sockets gets nothing a ZeroMQ peer would not.

One secure (CURVE, roles) cluster serves the module: w1 (scale) feeds w2 (add_const).
"""

from __future__ import annotations

import glob
import os
import socket
import time
from typing import Any

import numpy as np
import pytest
import zmq

from interop_runtime import ClusterSpec, Graph, LocalCluster
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.transport import lanes
from interop_runtime.transport.lanes import HELLO, LaneServer, lane_dir, pack, unpack
from interop_runtime.wire.codec import decode, encode, new_id
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg, DataMsg, ErrorMsg, ReplyMsg

pytestmark = pytest.mark.skipif(not lanes.supported(), reason="needs Linux seqpacket sockets")


@pytest.fixture(scope="module")
def lc(lane_cluster: LocalCluster) -> LocalCluster:
    return lane_cluster


def chain_works(lc: LocalCluster, n: int = 5) -> dict[str, Any]:
    with lc.client() as c:
        for i in range(n):
            x = np.full(4, i, np.float32)
            np.testing.assert_array_equal(c.run("lanes", {"x": x})["y"], x * 2 + 1)
        return {w: c.control(w, "ping")["lanes"] for w in ("w1", "w2")}


def ask_for_lane(sock: zmq.Socket) -> dict[str, str]:
    ping = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", action="ping",
                      args={"lane": True})
    sock.send_multipart(encode(ping))
    assert sock.poll(5000)
    reply = decode(sock.recv_multipart()).msg
    assert isinstance(reply, ReplyMsg), reply
    return reply.body["lane"]


def bound_lane(lc: LocalCluster, worker: str) -> tuple[zmq.Socket, lanes.Lane]:
    """A CURVE client's own DEALER to ``worker``'s inbox, and a lane bound to it."""
    sock = dial(lc, inbox(lc, worker), server=worker)
    offer = ask_for_lane(sock)
    lane = lanes.dial(offer["path"], offer["nonce"])
    assert lane is not None
    deadline = time.monotonic() + 5
    while not lane.bound and time.monotonic() < deadline:
        packet = lane.recv_packet()
        if packet is None:
            time.sleep(0.01)
        else:
            lane.bound = lanes.is_ack(packet)
    assert lane.bound, "no acknowledgement"
    return sock, lane


def closed_by_peer(conn: socket.socket, timeout_s: float = 8.0) -> bool:
    conn.settimeout(timeout_s)
    try:
        return conn.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def lane_sockets(lc: LocalCluster) -> list[str]:
    """The live workers' lane sockets (as a local attacker would list them)."""
    paths = []
    for worker in ("w1", "w2"):
        sock = dial(lc, inbox(lc, worker), server=worker)
        paths.append(ask_for_lane(sock)["path"])
        sock.close(0)
    assert set(paths) <= set(glob.glob(os.path.join(lane_dir(), "*.sock")))
    return paths


# --- the framing and the server, on real sockets ---------------------------------------

def test_a_packet_holds_the_frames_it_was_packed_from() -> None:
    frames = [b"header", b"", bytes(range(256)) * 4]
    packet = b"".join(bytes(b) for b in pack(frames) or [])
    assert [bytes(f) for f in unpack(packet)] == frames
    assert pack([b"x" * (lanes.LANE_MAX_BYTES + 1)]) is None  # too big: ZeroMQ takes it


@pytest.mark.parametrize("packet", [b"", b"\x01\x00", b"\x00\x00\x00\x00",
                                    b"\x02\x00\x00\x00\x01\x00\x00\x00",
                                    b"\x01\x00\x00\x00\x05\x00\x00\x00abc",
                                    b"\x01\x00\x00\x00\x01\x00\x00\x00abc",
                                    b"\xff\xff\xff\xff" + b"\x00" * 64])
def test_a_malformed_packet_is_refused(packet: bytes) -> None:
    with pytest.raises(ValueError):
        unpack(packet)


def test_the_lane_directory_is_private() -> None:
    mode = os.stat(lane_dir()).st_mode & 0o777
    assert mode == 0o700, oct(mode)


def test_a_nonce_binds_one_lane_once(tmp_path: Any) -> None:
    server = LaneServer(str(tmp_path))
    try:
        assert os.stat(server.path).st_mode & 0o777 == 0o600
        offer = server.offer(b"peer-1", "KEY")
        first = lanes.dial(offer["path"], offer["nonce"])
        again = lanes.dial(offer["path"], offer["nonce"])  # the same nonce, replayed
        assert first is not None and again is not None
        accepted = [server.accept(), server.accept()]
        assert all(a is not None for a in accepted)
        results = []
        for lane in accepted:
            assert lane is not None
            deadline = time.monotonic() + 2
            while (packet := lane.recv_packet()) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert packet is not None
            results.append(server.hello(lane, packet))
        assert results == [True, False]
        bound = server.by_peer[b"peer-1"]
        assert (bound.peer, bound.key) == (b"peer-1", "KEY")
        # a guessed nonce, and one that expired, bind nothing
        stale = server.offer(b"peer-2", None, now=time.monotonic() - 60)
        for nonce in ("0" * 32, stale["nonce"]):
            lanes.dial(server.path, nonce)
            lane = server.accept()
            assert lane is not None
            time.sleep(0.05)
            packet = lane.recv_packet()
            assert packet is not None and not server.hello(lane, packet)
        assert set(server.by_peer) == {b"peer-1"}
    finally:
        server.close()


def test_tables_a_peer_can_grow_are_bounded(tmp_path: Any) -> None:
    server = LaneServer(str(tmp_path))
    try:
        for i in range(lanes.MAX_OFFERS + 50):
            server.offer(b"p%d" % i, None)
        assert len(server.offers) == lanes.MAX_OFFERS
        conns = []
        for _ in range(lanes.MAX_UNBOUND + 20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(server.path)
            conns.append(s)
            server.accept()
        assert len(server.unbound) == lanes.MAX_UNBOUND
        assert len(server.expire(time.monotonic() + lanes.HELLO_TIMEOUT_S + 1)) \
            == lanes.MAX_UNBOUND
        assert not server.unbound
        for s in conns:
            s.close()
    finally:
        server.close()


# --- a cluster: runs use lanes ------------------------------------------------------------

def test_runs_go_over_lanes_between_processes_on_one_host(lc: LocalCluster) -> None:
    seen = chain_works(lc)
    # w1 took the client's lane and dialled w2's; w2 took w1's and the client's
    assert seen["w1"]["in"] >= 1 and seen["w1"]["out"] >= 1, seen
    assert seen["w2"]["in"] >= 2, seen


def test_without_lanes_the_same_runs_take_zeromq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEROP_NO_LANES", "1")
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5},
        "workers": [numpy_worker("w1", "scale")]})
    with LocalCluster(spec) as cluster, cluster.client() as c:
        g = Graph("one").node("a", "w1", "scale", factor=3.0).input("x", "a.x")
        c.register(g.output("y", "a.y"))
        x = np.arange(4, dtype=np.float32)
        np.testing.assert_array_equal(c.run("one", {"x": x})["y"], x * 3)
        assert c.control("w1", "ping")["lanes"] is None


# --- an attacker on this host -------------------------------------------------------------

def test_a_stranger_on_a_lane_socket_is_closed_and_runs_go_on(lc: LocalCluster) -> None:
    """Someone of our user finds the sockets: garbage, a guessed nonce, silence and a flood
    of connections are closed; nothing is bound, and the next runs succeed."""
    chain_works(lc, 1)
    paths = lane_sockets(lc)
    victims = []
    for path in paths:
        for first in (b"garbage", HELLO + b"0" * 32, pack([b"x"])):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(path)
            s.send(first if isinstance(first, bytes) else b"".join(bytes(b) for b in first))
            victims.append(s)
    for s in victims:
        assert closed_by_peer(s, 3.0)
    flood = []
    for path in paths:
        for _ in range(lanes.MAX_UNBOUND + 10):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(path)
            flood.append(s)
    chain_works(lc, 3)  # served while the flood waits
    assert closed_by_peer(flood[0])  # the oldest silent ones go first, the rest time out
    for s in flood:
        s.close()
    chain_works(lc, 3)


def test_a_lane_speaks_with_its_connection_s_authority_only(lc: LocalCluster) -> None:
    """A lane bound to a client's connection is that client: DATA for an input only w1 may
    feed is refused as it would be over ZeroMQ (the error comes back on the DEALER)."""
    sock, lane = bound_lane(lc, "w2")
    try:
        forged = DataMsg(v=PROTOCOL_VERSION, id=new_id(), src="w1", graph="lanes",
                         run=new_id(), node="b")
        assert lane.send(encode(forged, {"x": np.ones(4, np.float32)}))
        assert sock.poll(5000)
        answer = decode(sock.recv_multipart()).msg
        assert isinstance(answer, ErrorMsg) and answer.code == "unauthorized", answer
        assert answer.reply_to == forged.id
        # and a malformed packet closes the lane, not the worker
        lane.sock.send(b"\x07\x00\x00\x00junk")
        assert closed_by_peer(lane.sock)
        chain_works(lc, 3)
    finally:
        lane.close()
        sock.close(0)


def test_a_lane_offer_is_for_the_asking_connection_only(lc: LocalCluster) -> None:
    """The nonce comes over CURVE; a lane that says another connection's nonce twice, or
    one a worker never offered, binds nothing."""
    sock = dial(lc, inbox(lc, "w1"), server="w1")
    try:
        offer = ask_for_lane(sock)
        assert os.path.dirname(offer["path"]) == lane_dir()
        mine = lanes.dial(offer["path"], offer["nonce"])
        assert mine is not None
        time.sleep(0.2)
        thief = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        thief.connect(offer["path"])
        thief.send(HELLO + offer["nonce"].encode())  # used already
        assert closed_by_peer(thief, 3.0)
        assert lanes.is_ack(mine.sock.recv(64))
        mine.close()
    finally:
        sock.close(0)
