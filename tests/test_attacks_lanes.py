"""Attacks on same-host lanes (SPEC section 20), on real processes and real unix sockets.

Two attackers: (1) a local process of our user who finds the lane sockets in the lane
directory, (2) an authenticated but hostile peer holding a client key, with its own CURVE
DEALERs and the lanes they are offered. Each test states the guarantee it tries to break.

One secure (CURVE, roles) cluster serves most of the module: w1 (scale) feeds w2
(add_const); a second, supervised cluster is started for the kill test.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from conftest import lanes_graph

from interop_runtime import ClusterSpec, LocalCluster
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.transport import lanes
from interop_runtime.transport.lanes import HELLO, LANE_MAX_BYTES, MAX_FRAMES, lane_dir, pack
from interop_runtime.wire.codec import decode, encode, new_id
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg, DataMsg, ErrorMsg, ReplyMsg

pytestmark = pytest.mark.skipif(not lanes.supported(), reason="needs Linux seqpacket sockets")


_graph = lanes_graph


@pytest.fixture(scope="module")
def lc(lane_cluster: LocalCluster) -> LocalCluster:
    return lane_cluster


def chain_works(lc: LocalCluster, n: int = 3, seed: float = 0.0) -> dict[str, Any]:
    with lc.client() as c:
        for i in range(n):
            x = np.full(4, seed + i, np.float32)
            np.testing.assert_array_equal(c.run("lanes", {"x": x}, timeout_s=20)["y"], x * 2 + 1)
        return {w: c.control(w, "ping")["lanes"] for w in ("w1", "w2")}


def ping(sock: zmq.Socket, lane: bool = True, timeout_ms: int = 5000) -> ReplyMsg:
    msg = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", action="ping",
                     args={"lane": True} if lane else {})
    sock.send_multipart(encode(msg))
    while True:
        assert sock.poll(timeout_ms), "the worker did not answer a ping"
        reply = decode(sock.recv_multipart()).msg
        if getattr(reply, "reply_to", None) == msg.id:
            assert isinstance(reply, ReplyMsg), reply
            return reply


def wait_bound(lane: lanes.Lane, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not lane.bound and not lane.closed and time.monotonic() < deadline:
        packet = lane.recv_packet()
        if packet is None:
            time.sleep(0.005)
        else:
            lane.bound = lanes.is_ack(packet)
    return lane.bound


def bound_lane(lc: LocalCluster, worker: str) -> tuple[zmq.Socket, lanes.Lane]:
    """A CURVE client's own DEALER to ``worker``'s inbox, and a lane bound to it."""
    sock = dial(lc, inbox(lc, worker), server=worker)
    offer = ping(sock).body["lane"]
    lane = lanes.dial(offer["path"], offer["nonce"])
    assert lane is not None
    assert wait_bound(lane), "no acknowledgement"
    return sock, lane


def closed_by_peer(conn: socket.socket, timeout_s: float = 5.0) -> bool:
    conn.setblocking(True)
    conn.settimeout(timeout_s)
    try:
        while True:
            if conn.recv(1 << 20) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def raw(frames: list[bytes]) -> bytes:
    return b"".join(bytes(b) for b in pack(frames) or [])


def header(count: int, lengths: list[int]) -> bytes:
    return struct.pack("<I", count) + struct.pack(f"<{len(lengths)}I", *lengths)


def _data_missing_frame() -> bytes:
    """A valid DATA header naming a tensor frame that the packet does not carry."""
    frames = encode(DataMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", graph="lanes",
                            run=new_id(), node="a"), {"x": np.ones(4, np.float32)})
    return raw([bytes(f) for f in frames][:1])


MALFORMED: dict[str, bytes] = {
    "zero_frames": header(0, []),
    "65_frames": header(MAX_FRAMES + 1, [0] * (MAX_FRAMES + 1)),
    "count_0xffffffff": b"\xff\xff\xff\xff" + b"\x00" * 256,
    "lengths_overflow_u32": header(2, [0xFFFFFFFF, 0xFFFFFFFF]) + b"ab",
    "lengths_wrap_to_size": header(2, [0xFFFFFFFF, 3]) + b"abc",
    "short_frame_table": header(4, [1]),
    "three_bytes": b"\x01\x00\x00",
    "empty_frames": header(3, [0, 0, 0]),
    "64_empty_frames": header(MAX_FRAMES, [0] * MAX_FRAMES),
    "garbage_msgpack_header": raw([b"\xc1\xc1\xc1 not msgpack"]),
    "msgpack_not_a_map": raw([msgpack.packb([1, 2, 3])]),
    "msgpack_map_wrong_types": raw([msgpack.packb({"v": "x", "kind": 7, "id": None})]),
    "header_names_missing_frame": _data_missing_frame(),
    "exactly_LANE_MAX_BYTES": raw([b"\x80" * LANE_MAX_BYTES]),
    "one_byte_over_LANE_MAX_BYTES": header(1, [LANE_MAX_BYTES + 1]) + b"\x80" * (
        LANE_MAX_BYTES + 1),
    "over_the_receive_buffer": header(1, [LANE_MAX_BYTES + 4096]) + b"\x80" * (
        LANE_MAX_BYTES + 4096),
}


# --- (1) malformed packets ------------------------------------------------------------------

def test_no_malformed_packet_kills_or_wedges_a_worker(lc: LocalCluster) -> None:
    """Guarantee: no packet on a bound lane, however malformed (framing or content), kills
    or wedges the worker: the DEALER it is bound to still gets answers and the next runs
    succeed. A packet that is not our framing closes only that lane."""
    chain_works(lc, 1)
    for worker in ("w1", "w2"):
        for name, packet in MALFORMED.items():
            sock, lane = bound_lane(lc, worker)
            try:
                lane.sock.setblocking(True)
                try:
                    lane.sock.send(packet)
                except OSError as exc:  # too big for our own socket buffer: nothing sent
                    assert name == "over_the_receive_buffer", (name, exc)
                # the worker answers the same connection afterwards (over ZeroMQ)
                assert ping(sock, lane=False).body["name"] == worker, name
            finally:
                lane.close()
                sock.close(0)
    chain_works(lc, 3)


def test_content_errors_on_a_lane_come_back_typed_on_the_dealer(lc: LocalCluster) -> None:
    """Guarantee: a well-framed packet whose message does not decode is refused exactly as
    over ZeroMQ: a typed ERROR on the DEALER the lane is bound to, and the lane stays."""
    sock, lane = bound_lane(lc, "w1")
    try:
        for name in ("garbage_msgpack_header", "msgpack_not_a_map",
                     "header_names_missing_frame", "empty_frames"):
            lane.sock.send(MALFORMED[name])
            assert sock.poll(5000), name
            answer = decode(sock.recv_multipart()).msg
            assert isinstance(answer, ErrorMsg), (name, answer)
            assert answer.code in ("bad_frame", "bad_header", "bad_tensor", "version"), (
                name, answer.code)
        assert not lane.closed
        assert lane.send([bytes(f) for f in encode(ControlMsg(
            v=PROTOCOL_VERSION, id=new_id(), src="client", action="describe"))])
        assert sock.poll(5000)
        assert isinstance(decode(sock.recv_multipart()).msg, ReplyMsg)
    finally:
        lane.close()
        sock.close(0)


def test_a_framing_error_closes_the_lane_and_only_it(lc: LocalCluster) -> None:
    """Guarantee: a packet whose framing is wrong (count 0, 65 frames, lengths that do not
    add up, more than a lane holds) closes that lane; another client's lane stays bound."""
    for name in ("zero_frames", "65_frames", "count_0xffffffff", "lengths_overflow_u32",
                 "three_bytes"):
        bystander_sock, bystander = bound_lane(lc, "w2")
        sock, lane = bound_lane(lc, "w2")
        try:
            lane.sock.send(MALFORMED[name])
            assert closed_by_peer(lane.sock), name
            ok = bystander.send(encode(ControlMsg(v=PROTOCOL_VERSION, id=new_id(),
                                                  src="client", action="describe")))
            assert ok and bystander_sock.poll(5000), name
            assert isinstance(decode(bystander_sock.recv_multipart()).msg, ReplyMsg)
        finally:
            for x in (lane, bystander):
                x.close()
            sock.close(0)
            bystander_sock.close(0)


# --- (2) authority ------------------------------------------------------------------------

@pytest.mark.parametrize("action,args", [
    ("plan", {"plan": {"graph": "lanes", "version": 99, "nodes": []}}),
    ("cancel", {}), ("shutdown", {}), ("pause", {}), ("load", {"name": "m"})])
def test_a_client_lane_cannot_do_what_only_the_coordinator_may(
        lc: LocalCluster, action: str, args: dict[str, Any]) -> None:
    """Guarantee: a lane bound to a client's connection has that client's authority only:
    CONTROL plan/cancel/shutdown/pause/load is refused (unauthorized, on the DEALER), and
    the worker keeps its plan and keeps serving."""
    sock, lane = bound_lane(lc, "w2")
    try:
        msg = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="coordinator", action=action,
                         graph="lanes", run=new_id() if action == "cancel" else None, args=args)
        assert lane.send(encode(msg))
        assert sock.poll(5000)
        answer = decode(sock.recv_multipart()).msg
        assert isinstance(answer, ErrorMsg) and answer.code == "unauthorized", answer
        assert answer.reply_to == msg.id
        chain_works(lc, 2)
    finally:
        lane.close()
        sock.close(0)


def test_a_lane_carries_the_key_of_its_connection_not_of_the_dialler(lc: LocalCluster) -> None:
    """Guarantee: a lane dialled by a process of the same user as w1 (the feeder of b.x) but
    bound to a client's DEALER has the client's key: DATA for b.x on it is refused every
    time, and it fails no run."""
    sock, lane = bound_lane(lc, "w2")
    try:
        run = new_id()
        forged = DataMsg(v=PROTOCOL_VERSION, id=new_id(), src="w1", graph="lanes", run=run,
                         node="b")
        for _ in range(3):
            assert lane.send(encode(forged, {"x": np.full(4, 99, np.float32)}))
            assert sock.poll(5000)
            answer = decode(sock.recv_multipart()).msg
            assert isinstance(answer, ErrorMsg) and answer.code == "unauthorized", answer
        chain_works(lc, 2)
    finally:
        lane.close()
        sock.close(0)


# --- (3) bounded tables ---------------------------------------------------------------------

def test_many_offers_on_one_connection_are_bounded_and_the_newest_still_binds(
        lc: LocalCluster) -> None:
    """Guarantee: offers a peer asks for are bounded (MAX_OFFERS, oldest dropped): after
    MAX_OFFERS + 100 pings the oldest nonce binds nothing, the newest binds, and runs go on."""
    sock = dial(lc, inbox(lc, "w1"), server="w1")
    try:
        ids = []
        for _ in range(lanes.MAX_OFFERS + 100):
            msg = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", action="ping",
                             args={"lane": True})
            sock.send_multipart(encode(msg))
            ids.append(msg.id)
        offers: dict[str, dict[str, str]] = {}
        while len(offers) < len(ids):
            assert sock.poll(10000)
            reply = decode(sock.recv_multipart()).msg
            assert isinstance(reply, ReplyMsg)
            offers[reply.reply_to or ""] = reply.body["lane"]
        oldest, newest = offers[ids[0]], offers[ids[-1]]
        stale = lanes.dial(oldest["path"], oldest["nonce"])
        assert stale is not None and not wait_bound(stale, 2.0)
        assert stale.closed or closed_by_peer(stale.sock)
        fresh = lanes.dial(newest["path"], newest["nonce"])
        assert fresh is not None and wait_bound(fresh)
        fresh.close()
        chain_works(lc, 2)
    finally:
        sock.close(0)


def test_many_bound_lanes_from_many_dealers_and_all_closed_are_forgotten(
        lc: LocalCluster) -> None:
    """Guarantee: 150 DEALERs each with a bound lane do not stop runs; the worker counts
    them, and once their lanes close it forgets them (its table shrinks back)."""
    before = chain_works(lc, 1)["w1"]["in"]
    held = []
    try:
        for _ in range(150):
            held.append(bound_lane(lc, "w1"))
        with lc.client() as c:
            assert c.control("w1", "ping")["lanes"]["in"] >= 150
        chain_works(lc, 3)
    finally:
        for sock, lane in held:
            lane.close()
            sock.close(0)
    deadline = time.monotonic() + 5
    with lc.client() as c:
        while c.control("w1", "ping")["lanes"]["in"] > before + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.control("w1", "ping")["lanes"]["in"] <= before + 1


def test_a_connection_flood_at_the_lane_socket_does_not_stop_runs(lc: LocalCluster) -> None:
    """Guarantee (local attacker): 300 silent connections and 300 that send a wrong hello
    at each worker's lane socket are closed (unbound table bounded) and runs go on."""
    paths = []
    for worker in ("w1", "w2"):
        sock = dial(lc, inbox(lc, worker), server=worker)
        paths.append(ping(sock).body["lane"]["path"])
        sock.close(0)
    conns = []
    try:
        for path in paths:
            for i in range(300):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                s.connect(path)
                if i % 2:
                    s.send(HELLO + os.urandom(16).hex().encode())
                conns.append(s)
        chain_works(lc, 3)
        assert closed_by_peer(conns[0]) and closed_by_peer(conns[1])
    finally:
        for s in conns:
            s.close()
    chain_works(lc, 2)


# --- (4) floods and fallback ----------------------------------------------------------------

def test_a_flood_of_refused_packets_on_one_lane_does_not_starve_runs(lc: LocalCluster) -> None:
    """Guarantee: a hostile client that blasts refused DATA on its lane as fast as the
    socket takes it (and never reads its DEALER) does not starve other clients' runs."""
    sock, lane = bound_lane(lc, "w2")
    stop = threading.Event()
    sent = [0]
    frames = encode(DataMsg(v=PROTOCOL_VERSION, id=new_id(), src="w1", graph="lanes",
                            run=new_id(), node="b"), {"x": np.ones(256, np.float32)})

    def flood() -> None:
        while not stop.is_set() and not lane.closed:
            if lane.send(frames):
                sent[0] += 1
            else:
                time.sleep(0)

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        chain_works(lc, 5)
        assert time.monotonic() - started < 15
    finally:
        stop.set()
        t.join(5)
        lane.close()
        sock.close(0)
    assert sent[0] > 100, sent
    chain_works(lc, 2)


def test_a_client_whose_lanes_were_closed_falls_back_then_gets_new_ones(
        lc: LocalCluster) -> None:
    """Guarantee: when a client's lanes close under it (its peer end shut down), its runs
    still succeed (over ZeroMQ) and later runs get new lanes."""
    with lc.client() as c:
        x = np.arange(4, dtype=np.float32)
        for _ in range(2):
            np.testing.assert_array_equal(c.run("lanes", {"x": x})["y"], x * 2 + 1)
        path = c._sync._direct.lanes  # the lane table of c.run (the calling thread's)
        old = list(path.by_endpoint.values())
        assert old and all(lane.bound for lane in old)
        for lane in old:
            lane.sock.shutdown(socket.SHUT_RDWR)
        for i in range(6):
            y = np.full(4, i, np.float32)
            np.testing.assert_array_equal(c.run("lanes", {"x": y})["y"], y * 2 + 1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            new = list(path.by_endpoint.values())
            if new and all(lane.bound and lane not in old for lane in new):
                break
            np.testing.assert_array_equal(c.run("lanes", {"x": x})["y"], x * 2 + 1)
            time.sleep(0.1)
        new = list(path.by_endpoint.values())
        assert new and all(lane.bound and lane not in old for lane in new), new
        assert c.control("w1", "ping")["lanes"]["in"] >= 1


def test_two_clients_in_one_process_and_clients_in_threads_get_their_own_outputs(
        lc: LocalCluster) -> None:
    """Guarantee: outputs sent back on lanes go to the client whose run it is: two Clients
    in one process interleaving runs, and 4 threads with a Client each, never see another
    client's outputs."""
    with lc.client() as a, lc.client() as b:
        for i in range(5):
            xa, xb = np.full(4, i, np.float32), np.full(4, 100 + i, np.float32)
            np.testing.assert_array_equal(a.run("lanes", {"x": xa})["y"], xa * 2 + 1)
            np.testing.assert_array_equal(b.run("lanes", {"x": xb})["y"], xb * 2 + 1)
    errors: list[BaseException] = []

    def load(seed: int) -> None:
        try:
            with lc.client() as c:
                for i in range(10):
                    x = np.full(8, seed * 1000 + i, np.float32)
                    np.testing.assert_array_equal(c.run("lanes", {"x": x})["y"], x * 2 + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


# --- (5) offers that point elsewhere --------------------------------------------------------

def _offer(path: Any, nonce: Any = "0" * 32) -> dict[str, Any]:
    return {"lane": {"path": path, "nonce": nonce}}


def test_a_lane_offer_outside_the_lane_directory_is_never_dialled(tmp_path: Any) -> None:
    """Guarantee: a reply offering a path outside our lane directory (absolute elsewhere,
    `..`, a link in the directory that points out, a subdirectory, not a string, a bad
    nonce) is refused by lane_offer (None), and one inside it is taken."""
    here = lane_dir()
    outside = str(tmp_path / "evil.sock")
    evil = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    evil.bind(outside)
    link = os.path.join(here, f"{os.getpid()}-attack-link.sock")
    os.symlink(outside, link)
    try:
        for body in (_offer("/tmp/evil.sock"), _offer(outside),
                     _offer(os.path.join(here, "..", "evil.sock")),
                     _offer(os.path.join(here, "..", os.path.basename(here) + "x", "a.sock")),
                     _offer(link), _offer(os.path.join(here, "sub", "a.sock")),
                     _offer(here), _offer(here + "/"), _offer(b"/tmp/evil.sock"),
                     _offer(None), _offer(os.path.join(here, "a.sock"), "0" * 31),
                     _offer(os.path.join(here, "a.sock"), "G" * 32), {"lane": "x"}, None, []):
            assert lanes.lane_offer(body) is None, body
        good = os.path.join(here, "1-abc.sock")
        assert lanes.lane_offer(_offer(good)) == (good, "0" * 32)
    finally:
        os.unlink(link)
        evil.close()


def test_a_lane_offer_with_a_nul_byte_is_refused_not_raised() -> None:
    """Guarantee: lane_offer never raises, whatever the reply says: a path with a NUL byte
    (or a nonce with one) is simply not an offer."""
    assert lanes.lane_offer(_offer(os.path.join(lane_dir(), "a\x00.sock"))) is None


# --- (6) a killed worker --------------------------------------------------------------------

def test_a_killed_worker_with_bound_lanes_comes_back_with_lanes() -> None:
    """Guarantee: kill -9 of a worker while clients and its peer hold lanes to it: the
    supervised restart offers lanes again, runs succeed, and its dead socket is swept."""
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.3},
        "supervise": {"enabled": True, "initial_backoff_s": 0.2},
        "workers": [numpy_worker("w1", "scale"), numpy_worker("w2", "add_const")]})
    with LocalCluster(spec) as lc2, lc2.client(timeout_s=30) as c:
        c.register(_graph())
        x = np.arange(4, dtype=np.float32)
        for _ in range(3):
            np.testing.assert_array_equal(c.run("lanes", {"x": x})["y"], x * 2 + 1)
        assert c.control("w2", "ping")["lanes"]["in"] >= 2
        sock, lane = bound_lane(lc2, "w2")  # an attacker's too
        old_pid = lc2.workers["w2"].pid
        old_path = ping(sock).body["lane"]["path"]
        lc2.kill_worker("w2")
        assert closed_by_peer(lane.sock)
        lane.close()
        sock.close(0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = {w["name"]: w["pid"] for w in c.workers() if w["alive"]}
            if alive.get("w2") not in (None, old_pid):
                break
            time.sleep(0.2)
        else:
            pytest.fail("w2 was not restarted")
        ok = 0
        deadline = time.monotonic() + 30
        while ok < 5 and time.monotonic() < deadline:
            try:
                np.testing.assert_array_equal(c.run("lanes", {"x": x}, timeout_s=5)["y"],
                                              x * 2 + 1)
                ok += 1
            except Exception:  # the first ones may meet the old plan
                time.sleep(0.3)
        assert ok == 5
        seen = c.control("w2", "ping")["lanes"]
        assert seen["in"] >= 2, seen  # w1's lane and the client's, again
        assert c.control("w1", "ping")["lanes"]["out"] >= 1
        assert not os.path.exists(old_path)  # swept by the new process's LaneServer


# --- (7) a hostile ROUTER answering a client's ping -------------------------------------

class HostileInbox:
    """A CURVE ROUTER posing as a worker inbox: it answers every ping with ``lane``."""

    def __init__(self, lane: Any) -> None:
        self.public, secret = zmq.curve_keypair()
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.curve_server = True
        self.sock.curve_secretkey = secret
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.lane, self.stop, self.answered = lane, threading.Event(), 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            peer, *frames = self.sock.recv_multipart()
            msg = decode(frames).msg
            if isinstance(msg, ControlMsg) and msg.action == "ping":
                reply = ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src="evil", reply_to=msg.id,
                                 body={"name": "evil", "lanes": None, "lane": self.lane})
                self.sock.send_multipart([peer, *encode(reply)])
                self.answered += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close(0)


def _warm_up_against(lc: LocalCluster, lane: Any) -> Any:
    from interop_runtime.client.direct import DirectPath, Routes
    evil = HostileInbox(lane)
    direct = DirectPath(zmq.Context.instance(), lc.security(), None, zmq.Poller())
    try:
        assert direct.lanes.enabled
        routes = Routes(graph="evil", routes_id="x", inputs={"x": [{
            "worker": "evil", "endpoint": evil.endpoint,
            "public_key": evil.public.decode(), "host": direct.host, "node": "a",
            "input": "x", "pool": None}]}, outputs={}, input_specs={})
        direct.warm_up(routes)
        assert evil.answered == 1  # it was asked, and answered
        return dict(direct.lanes.by_endpoint)
    finally:
        direct.close()
        evil.close()


def test_a_hostile_inbox_cannot_make_a_client_dial_outside_the_lane_directory(
        lc: LocalCluster, tmp_path: Any) -> None:
    """Guarantee: a (real, CURVE) ROUTER posing as a worker that answers the client's ping
    with a lane at /tmp/..., `<lane dir>/../x` or a link in the lane directory pointing out
    is never dialled: nothing connects to the attacker's socket, the client holds no lane."""
    here = lane_dir()
    outside = str(tmp_path / "evil.sock")
    trap = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    trap.bind(outside)
    trap.listen(8)
    trap.setblocking(False)
    link = os.path.join(here, f"{os.getpid()}-attack-link2.sock")
    os.symlink(outside, link)
    try:
        for path in (outside, os.path.join(here, "..", os.path.relpath(outside, "/tmp")),
                     os.path.join(here, "..", "..", outside.lstrip("/")), link):
            got = _warm_up_against(lc, {"path": path, "nonce": "a" * 32})
            assert got == {}, path
            with pytest.raises(BlockingIOError):
                trap.accept()
    finally:
        os.unlink(link)
        trap.close()


def test_a_hostile_inbox_offering_a_nul_path_does_not_break_the_client(
        lc: LocalCluster) -> None:
    """Guarantee: whatever a hostile inbox offers, a client's warm-up does not raise: a
    path with a NUL byte is just not an offer."""
    assert _warm_up_against(lc, {"path": os.path.join(lane_dir(), "x\x00.sock"),
                                 "nonce": "a" * 32}) == {}
