"""CURVE on every socket: authenticated and encrypted, with an allow-list."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zmq

from interop_runtime import Client, Graph, RunTimeoutError
from interop_runtime.client.testing import numpy_worker
from interop_runtime.transport.allowlist import Role
from interop_runtime.transport.security import Security, generate_keys, is_loopback


def test_cluster_runs_over_curve_and_rejects_strangers(start_cluster, tmp_path) -> None:
    cluster = start_cluster(numpy_worker("w1", "scale"), numpy_worker("w2", "add_const"),
                            curve=True)
    g = Graph("secure").node("a", "w1", "scale").node("b", "w2", "add_const")
    g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")
    with cluster.client() as c:  # the cluster's own client key, on the allow-list
        out = c.run(g, {"x": np.ones(2, np.float32)})
        np.testing.assert_array_equal(out["y"], np.full(2, 3, np.float32))
        assert all(w["alive"] for w in c.workers())

    # a peer with a valid key pair that is not on the allow-list
    public, secret = generate_keys(tmp_path / "stranger", "stranger", authorize=False)
    stranger = Security.from_files(secret, None, cluster.keys_dir / "coordinator.key")
    with Client(cluster.address, security=stranger, timeout_s=2) as c, \
            pytest.raises(RunTimeoutError):
        c.status()
    # a peer with no key at all (plain text)
    with Client(cluster.address, timeout_s=2) as c, pytest.raises(RunTimeoutError):
        c.status()
    # a peer that pins the wrong server key
    other_pub, _ = generate_keys(tmp_path / "other", "other", authorize=False)
    wrong = Security.from_files(cluster.keys_dir / "client.key_secret", None, other_pub)
    with Client(cluster.address, security=wrong, timeout_s=2) as c, pytest.raises(RunTimeoutError):
        c.status()
    # and the cluster still serves its own clients
    with cluster.client() as c:
        assert c.status()["workers_alive"] == 2


def test_worker_inbox_rejects_plain_text(start_cluster) -> None:
    cluster = start_cluster(numpy_worker("w1", "identity"), curve=True)
    with cluster.client() as c:
        endpoint = c.workers()[0]["endpoint"]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send(b"\x81\xa1v\x01")
    assert sock.poll(1500) == 0  # no handshake, no reply, nothing processed
    sock.close(0)


def test_plain_text_refused_off_loopback() -> None:
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("ipc:///tmp/x")
    assert not is_loopback("tcp://0.0.0.0:5555") and not is_loopback("tcp://10.1.2.3:1")
    proc = subprocess.run([sys.executable, "-m", "interop_runtime", "coordinator", "start",
                           "--bind", "tcp://0.0.0.0:0", "--state", ":memory:"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to bind" in proc.stdout + proc.stderr


def test_wildcard_bind_needs_an_advertised_address(tmp_path) -> None:
    config = tmp_path / "w.yaml"
    config.write_text("functions: {identity: 'interop_runtime.worker.numpy_ops:identity'}\n")
    generate_keys(tmp_path / "keys", "w", role=Role("worker", "w"))
    generate_keys(tmp_path / "keys", "coordinator")
    keys = tmp_path / "keys"
    proc = subprocess.run([sys.executable, "-m", "interop_runtime", "worker", "start",
                           "--plugin", "numpy", "--config", str(config), "--name", "w",
                           "--key", str(keys / "w.key_secret"), "--authorized",
                           str(keys / "authorized"), "--coordinator-key",
                           str(keys / "coordinator.key"),
                           "--bind", "tcp://0.0.0.0:0", "--coordinator", "tcp://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--advertise" in proc.stdout + proc.stderr


def test_the_zap_handler_answers_every_request_even_one_that_breaks_the_check(tmp_path
                                                                            ) -> None:
    """transport/zap.py serves the allow-list check on its own thread. A request the check
    chokes on (a CURVE key of 5 bytes: z85 cannot encode it) is refused with 500, and the
    next request is still answered: an unanswered one would stall every later handshake."""
    from interop_runtime.transport.zap import ZapHandler

    public, _ = generate_keys(tmp_path, "friend")
    friend = zmq.utils.z85.decode(Security.from_files(tmp_path / "friend.key_secret")
                                  .public_key)
    ctx = zmq.Context()
    handler = ZapHandler(ctx, "interop", str(tmp_path / "authorized"))
    handler.start()
    req = ctx.socket(zmq.REQ)
    req.connect("inproc://zeromq.zap.01")
    req.rcvtimeo = 5000

    def ask(key: bytes, request_id: bytes) -> list[bytes]:
        req.send_multipart([b"1.0", request_id, b"interop", b"127.0.0.1", b"", b"CURVE", key])
        return req.recv_multipart()

    try:
        assert ask(b"short", b"r1")[1:3] == [b"r1", b"500"]
        assert ask(friend, b"r2")[1:3] == [b"r2", b"200"]  # still served, and allows it
        assert ask(bytes(32), b"r3")[1:3] == [b"r3", b"400"]  # a key not on the list
    finally:
        req.close(0)
        handler.stop()
        ctx.term()
