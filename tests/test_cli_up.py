"""`interop up` and `interop launch` as a user runs them: real CLI subprocesses, real
coordinators and workers. Start failures are one line and a non-zero exit; deaths and
restarts show in the terminal; logs and cluster.json stay in the state folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from interop_runtime import Client
from interop_runtime.client.cluster import free_tcp_address
from interop_runtime.client.statedir import find_cluster_state
from interop_runtime.transport.security import Security

CLI = [sys.executable, "-m", "interop_runtime"]
SCALE = {"functions": {"scale": "interop_runtime.worker.numpy_ops:scale"}}


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


def cluster_file(tmp_path: Path, name: str, workers: list[dict[str, Any]], **top: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    coordinator = {"heartbeat_s": 0.3, **top.pop("coordinator", {})}
    path.write_text(yaml.safe_dump({"coordinator": coordinator, "workers": workers, **top}))
    return path


def numpy(name: str, config: dict[str, Any] = SCALE) -> dict[str, Any]:
    return {"name": name, "plugin": "numpy", "config": config}


class Up:
    """A running `interop up`, its output in a file."""

    def __init__(self, path: Path, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen([*CLI, "up", str(path)], stdout=out.open("wb"),
                                     stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, needle: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while needle not in self.text():
            assert self.proc.poll() is None or needle in self.text(), \
                f"`interop up` exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            time.sleep(0.1)
        return self.text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Any]:
    started: list[Up] = []

    def start(path: Path) -> Up:
        up = Up(path, tmp_path / f"up-{len(started)}.out")
        started.append(up)
        return up
    yield start
    for up in started:
        up.stop()
    for path in tmp_path.rglob("cluster.json"):  # nothing left behind, whatever happened
        for pid in _pids(json.loads(path.read_text())):
            if not _gone(pid, timeout_s=0.5):
                os.kill(pid, signal.SIGKILL)


def _pids(info: dict[str, Any]) -> list[int]:
    procs = [info.get("coordinator", {}), *info.get("workers", {}).values()]
    return [p["pid"] for p in procs if p.get("pid")]


def _gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def client_for(info: dict[str, Any]) -> Client:
    keys = info["keys"]
    security = Security.from_files(keys["client_key"], None, keys["coordinator_key"])
    return Client(info["address"], timeout_s=5, security=security)


def test_port_taken_fails_and_no_worker_joins_the_other_coordinator(tmp_path, state) -> None:
    address = free_tcp_address()
    other = subprocess.Popen([*CLI, "coordinator", "start", "--bind", address, "--insecure"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        with Client(address, timeout_s=5) as c:
            assert c.workers() == []  # it serves
            path = cluster_file(tmp_path, "taken", [numpy("w1")],
                                coordinator={"bind": address, "curve": False})
            done = subprocess.run([*CLI, "up", str(path)], capture_output=True, text=True,
                                  timeout=120)
            out = done.stdout + done.stderr
            assert done.returncode != 0, out
            assert f"coordinator failed to start on {address}" in out, out
            assert "Traceback" not in out
            time.sleep(1.0)  # a worker started by mistake would have registered by now
            assert c.workers() == []
    finally:
        other.terminate()
        other.wait(timeout=10)


def test_worker_import_error_names_the_worker_and_its_log(tmp_path, state) -> None:
    bad = {"functions": {"scale": "no_such_module_here:scale"}}
    path = cluster_file(tmp_path, "broken", [numpy("w1"), numpy("w2", bad)])
    done = subprocess.run([*CLI, "up", str(path)], capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    line = next(x for x in out.splitlines() if "worker w2 failed to start" in x)
    assert "no_such_module_here" in line and "w2.log" in line
    assert "Traceback" not in out
    folder = find_cluster_state("broken")
    assert folder is not None and (folder / "w2.log").exists()  # kept after the failure
    assert json.loads((folder / "cluster.json").read_text())["state"] == "failed"


def test_up_prints_exports_reports_a_death_and_stops_cleanly(tmp_path, state, start_up) -> None:
    path = cluster_file(tmp_path, "happy", [numpy("w1"), numpy("w2")])
    up = start_up(path)
    text = up.wait_for("ready")
    folder = find_cluster_state("happy")
    assert folder is not None and folder.parent == state / "interop" / "happy"
    info = json.loads((folder / "cluster.json").read_text())
    assert f"export INTEROP_COORDINATOR={info['address']}" in text
    assert f"export INTEROP_KEY={info['keys']['client_key']}" in text
    assert "export INTEROP_COORDINATOR_KEY=" in text and str(folder) in text
    with client_for(info) as c:
        assert {w["name"] for w in c.workers() if w["alive"]} == {"w1", "w2"}
    os.kill(info["workers"]["w2"]["pid"], signal.SIGKILL)
    up.wait_for(f"worker w2 exited (signal 9); log: {folder / 'w2.log'}")
    assert up.proc.poll() is None  # a worker's death does not stop `up`
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(timeout=30) == 0, up.text()
    assert all(_gone(pid) for pid in _pids(info))
    assert (folder / "coordinator.log").stat().st_size > 0  # logs kept


def test_supervised_worker_restarts_and_coordinator_death_fails_up(tmp_path, state,
                                                                   start_up) -> None:
    path = cluster_file(tmp_path, "watched", [numpy("w1")],
                        supervise={"enabled": True, "initial_backoff_s": 0.2})
    up = start_up(path)
    up.wait_for("ready")
    folder = find_cluster_state("watched")
    assert folder is not None
    info = json.loads((folder / "cluster.json").read_text())
    old = info["workers"]["w1"]["pid"]
    os.kill(old, signal.SIGKILL)
    up.wait_for("worker w1 exited (signal 9)")
    up.wait_for("restarting worker w1")
    up.wait_for("worker w1 restarted and registered")
    with client_for(info) as c:
        [w1] = [w for w in c.workers() if w["name"] == "w1" and w["alive"]]
        assert w1["pid"] != old
    # cluster.json follows the new incarnation
    deadline = time.monotonic() + 10
    while json.loads((folder / "cluster.json").read_text())["workers"]["w1"]["pid"] != w1["pid"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(info["coordinator"]["pid"], signal.SIGKILL)
    assert up.proc.wait(timeout=30) != 0
    assert "coordinator exited (signal 9)" in up.text()
    assert _gone(w1["pid"])


def test_launch_with_a_bad_pipeline_is_one_line(tmp_path, state) -> None:
    path = cluster_file(tmp_path, "launchy", [numpy("w1")])
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"graph": {"name": "g", "nodez": {}}, "inputs": {}}))
    done = subprocess.run([*CLI, "launch", str(path), str(pipeline)], capture_output=True,
                          text=True, timeout=120)
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert str(pipeline) in out and "nodez" in out


def test_interop_scale_grows_and_shrinks_a_pool_of_a_running_up(tmp_path, state,
                                                                 start_up) -> None:
    path = cluster_file(tmp_path, "pooled", [{**numpy("rep"), "replicas": 1}])
    up = start_up(path)
    up.wait_for("ready")
    grown = subprocess.run([*CLI, "scale", "rep", "3"], capture_output=True, text=True,
                           timeout=120)
    assert grown.returncode == 0, grown.stdout + grown.stderr
    assert "pool rep: 3 replicas (rep-0, rep-1, rep-2)" in grown.stdout
    info = json.loads((find_cluster_state("pooled") / "cluster.json").read_text())
    with client_for(info) as c:
        assert sorted(w["name"] for w in c.workers() if w["alive"] and w["pool"] == "rep") \
            == ["rep-0", "rep-1", "rep-2"]
        shrunk = subprocess.run([*CLI, "scale", "rep", "1"], capture_output=True, text=True,
                                timeout=120)
        assert shrunk.returncode == 0 and "pool rep: 1 replicas (rep-0)" in shrunk.stdout
        assert [w["name"] for w in c.workers() if w["alive"]] == ["rep-0"]
    bad = subprocess.run([*CLI, "scale", "nope", "2"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "no pool 'nope'" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr and len(bad.stdout.splitlines()) == 1
    assert "exited" not in up.text()  # the drained replicas left on purpose, quietly
