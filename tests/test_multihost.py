"""Coordinator and worker on separate hosts, over CURVE: two network namespaces joined
by a veth pair, made and removed by this test. A cut link marks the worker dead; when
the link comes back the worker recovers by itself.

Needs root and iproute2 (`ip netns`); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from interop_runtime.transport.security import generate_keys

REPO = Path(__file__).resolve().parents[1]
COORD_IP, WORKER_IP, PORT = "10.231.7.1", "10.231.7.2", 47001


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture
def hosts() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2")
    tag = secrets.token_hex(3)
    coord, work = f"irc-{tag}", f"irw-{tag}"
    try:
        sh("ip", "netns", "add", coord)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
    try:
        sh("ip", "netns", "add", work)
        sh("ip", "link", "add", f"vc{tag}", "type", "veth", "peer", "name", f"vw{tag}")
        sh("ip", "link", "set", f"vc{tag}", "netns", coord)
        sh("ip", "link", "set", f"vw{tag}", "netns", work)
        for ns, dev, ip in ((coord, f"vc{tag}", COORD_IP), (work, f"vw{tag}", WORKER_IP)):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield coord, work
    finally:
        sh("ip", "netns", "del", work, check=False)
        sh("ip", "netns", "del", coord, check=False)


def in_ns(ns: str, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "interop_runtime",
                             *args], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def status(ns: str, keys: Path) -> dict:
    deadline = time.monotonic() + 20  # the coordinator may still be starting
    while True:
        proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m",
                               "interop_runtime", "status", "--json", "-c",
                               f"tcp://{COORD_IP}:{PORT}",
                               "--key", str(keys / "client.key_secret"),
                               "--coordinator-key", str(keys / "coordinator.key")],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def wait_for(pred, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_two_hosts_over_curve_survive_a_cut_link(hosts, tmp_path) -> None:
    coord_ns, work_ns = hosts
    keys = tmp_path / "keys"
    for name in ("coordinator", "remote", "client"):
        generate_keys(keys, name)
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(
        {"functions": {"scale": "interop_runtime.worker.numpy_ops:scale"}}))
    procs = [in_ns(coord_ns, "coordinator", "start", "--bind", f"tcp://{COORD_IP}:{PORT}",
                   "--state", ":memory:", "--heartbeat", "0.5",
                   "--key", str(keys / "coordinator.key_secret"),
                   "--authorized", str(keys / "authorized"), log=tmp_path / "coord.log")]
    procs.append(in_ns(work_ns, "worker", "start", "--plugin", "numpy", "--name", "remote",
                       "--config", str(tmp_path / "w.yaml"),
                       "--coordinator", f"tcp://{COORD_IP}:{PORT}",
                       "--bind", f"tcp://{WORKER_IP}:0", "--heartbeat", "0.5",
                       "--key", str(keys / "remote.key_secret"),
                       "--authorized", str(keys / "authorized"),
                       "--coordinator-key", str(keys / "coordinator.key"),
                       log=tmp_path / "worker.log"))
    try:
        def remote_alive() -> bool:
            return any(w["name"] == "remote" and w["alive"] for w in status(coord_ns, keys)["workers"])
        wait_for(remote_alive, "the remote worker to register")
        worker = next(w for w in status(coord_ns, keys)["workers"] if w["name"] == "remote")
        assert worker["endpoint"].startswith(f"tcp://{WORKER_IP}:")

        dev = next(line.split(":")[1].strip().split("@")[0] for line in
                   sh("ip", "netns", "exec", work_ns, "ip", "-o", "link").stdout.splitlines()
                   if "vw" in line)
        sh("ip", "netns", "exec", work_ns, "ip", "link", "set", dev, "down")
        wait_for(lambda: not remote_alive(), "the cut-off worker to be marked dead")
        sh("ip", "netns", "exec", work_ns, "ip", "link", "set", dev, "up")
        wait_for(remote_alive, "the worker to recover after the link came back", timeout=40)

        # and a run crosses the link again: client and coordinator on one host, worker on the other
        (tmp_path / "p.yaml").write_text(yaml.safe_dump({
            "graph": {"name": "remote", "nodes": {"a": {"worker": "remote", "function": "scale",
                                                        "args": {"factor": 3.0}}},
                      "inputs": {"x": ["a.x"]}, "outputs": {"y": "a.y"}},
            "inputs": {"x": {"value": [1.0, 2.0], "dtype": "float32"}}}))
        run = subprocess.run(["ip", "netns", "exec", coord_ns, sys.executable, "-m",
                              "interop_runtime", "run", str(tmp_path / "p.yaml"),
                              "-c", f"tcp://{COORD_IP}:{PORT}", "--save", str(tmp_path / "o.npz"),
                              "--key", str(keys / "client.key_secret"),
                              "--coordinator-key", str(keys / "coordinator.key")],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        import numpy as np
        assert np.load(tmp_path / "o.npz", allow_pickle=False)["y"].tolist() == [3.0, 6.0]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
