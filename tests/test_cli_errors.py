"""The CLI never lies and never dumps a traceback for a user error: the real `interop`
command in a subprocess, against a real (CURVE) cluster where it needs one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from interop_runtime import ClusterSpec, LocalCluster
from interop_runtime.client.cluster import free_tcp_address
from interop_runtime.client.testing import numpy_worker
from interop_runtime.wire.messages import PROTOCOL_VERSION

NUMPY_OPS = "interop_runtime.worker.numpy_ops"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTEROP_")}
    return subprocess.run([sys.executable, "-m", "interop_runtime", *args], capture_output=True,
                          text=True, timeout=timeout, env={**clean, **(env or {})})


def out(proc: subprocess.CompletedProcess[str]) -> str:
    return " ".join((proc.stdout + proc.stderr).split())  # rich may wrap long lines


def one_clean_line(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    text = out(proc)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return text


def pipeline(graph: str = "g", worker: str = "w1", function: str = "scale",
             input_name: str = "x") -> dict[str, Any]:
    return {"graph": {"name": graph, "nodes": {"a": {"worker": worker, "function": function}},
                      "edges": [], "inputs": {"x": ["a.x"]}, "outputs": {"y": "a.y"}},
            "inputs": {input_name: {"value": [1.0, 2.0], "dtype": "float32"}}}


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5},
        "workers": [numpy_worker("w1", "scale", "fail"), numpy_worker("doomed", "scale")]})
    with LocalCluster(spec) as lc:
        yield lc


# --- no coordinator, or one that does not answer ----------------------------------------------

@pytest.mark.parametrize("command", [["workers"], ["status"], ["runs"], ["graphs"],
                                     ["params", "list", "w1"]])
def test_no_coordinator_is_one_line(command: list[str]) -> None:
    address = free_tcp_address()
    text = one_clean_line(cli(*command, "-c", address))
    assert f"no coordinator at {address}" in text and "interop up" in text


def test_run_without_coordinator_does_not_wait_out_its_deadline(tmp_path: Path) -> None:
    address = free_tcp_address()
    proc = cli("run", str(write(tmp_path / "p.yaml", pipeline())), "-c", address,
               "--timeout", "600", timeout=30)
    assert f"no coordinator at {address}" in one_clean_line(proc)


def test_secure_coordinator_probed_without_keys_says_so(cluster: LocalCluster) -> None:
    text = one_clean_line(cli("status", "-c", cluster.address))
    assert f"no answer from {cluster.address}" in text
    assert "--key" in text and "--coordinator-key" in text


# --- config files ------------------------------------------------------------------------------

def test_pipeline_key_typo_names_file_and_key(tmp_path: Path) -> None:
    data = pipeline()
    data["graph"]["nodes"]["a"]["wroker"] = data["graph"]["nodes"]["a"].pop("worker")
    path = write(tmp_path / "typo.yaml", data)
    for command in (["run", str(path), "-c", free_tcp_address()], ["graph", str(path)]):
        text = one_clean_line(cli(*command))
        assert f"{path}:" in text and "graph.nodes.a.wroker: unknown key" in text, text


def test_missing_file_and_yaml_syntax_error(tmp_path: Path) -> None:
    missing = tmp_path / "nothere.yaml"
    for command in (["run", str(missing)], ["graph", str(missing)]):
        text = one_clean_line(cli(*command))
        assert f"{missing}: no such file" in text
    broken = write(tmp_path / "broken.yaml", "graph:\n  name: g\n  nodes: {a: [\n")
    text = one_clean_line(cli("graph", str(broken)))
    assert f"{broken}:4:" in text and "YAML syntax" in text


def test_bad_input_entry_names_the_input(tmp_path: Path) -> None:
    data = pipeline()
    data["inputs"] = {"x": {"file": "gone.npy"}}
    text = one_clean_line(cli("run", str(write(tmp_path / "p.yaml", data))))
    assert "inputs.x: no such file" in text and "gone.npy" in text


# --- options with fixed values, --version, --debug ---------------------------------------------

def test_fixed_choices_are_usage_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", pipeline())
    proc = cli("graph", str(path), "--format", "png")
    assert proc.returncode == 2 and "png" in out(proc) and "flowchart" not in proc.stdout
    assert cli("graph", str(path), "--format", "dot").stdout.startswith("digraph")
    for option, value in (("--log-format", "xml"), ("--log-level", "loud")):
        proc = cli("coordinator", "start", "--insecure", "--bind", free_tcp_address(),
                   option, value)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert value in out(proc) and "Traceback" not in proc.stderr


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0
    assert version("interop-runtime") in proc.stdout
    assert f"protocol {PROTOCOL_VERSION}" in proc.stdout


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothere.yaml")
    plain = one_clean_line(cli("run", missing))
    for proc in (cli("--debug", "run", missing), cli("run", missing, env={"INTEROP_DEBUG": "1"})):
        assert proc.returncode == 1
        assert "Traceback (most recent call last)" in proc.stderr and "ConfigError" in proc.stderr
    assert "no such file" in plain


# --- typed runtime errors, plugin load errors -------------------------------------------------

def test_typed_error_prints_its_code(cluster: LocalCluster, tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", pipeline(graph="wrong_input", input_name="xx"))
    text = one_clean_line(cli("run", str(path), env=cluster.connection()))
    assert "error [unknown_target]:" in text and "xx" in text


def test_plugin_import_typo_shows_the_import_error(tmp_path: Path) -> None:
    config = write(tmp_path / "w.yaml", {"functions": {"scale": f"{NUMPY_OPS}:nothere"}})
    proc = cli("worker", "start", "--plugin", "numpy", "--config", str(config), "--insecure",
               "--coordinator", free_tcp_address())
    text = one_clean_line(proc, code=2)
    assert f"cannot import 'nothere' from {NUMPY_OPS}" in text
    assert "function 'scale' in the worker config" in text
    assert "pip install" not in text and "not installed" not in text


# --- inventory: runs, graphs, workers ---------------------------------------------------------

def test_runs_graphs_and_a_dead_worker(cluster: LocalCluster, tmp_path: Path) -> None:
    env = cluster.connection()
    ok = cli("run", str(write(tmp_path / "ok.yaml", pipeline(graph="inv_ok"))), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = cli("run", str(write(tmp_path / "bad.yaml", pipeline(graph="inv_bad",
                                                                 function="fail"))), env=env)
    assert "error [function_failed]:" in one_clean_line(bad)

    body = json.loads(cli("runs", "--json", env=env).stdout)
    recent = {r["graph"]: r for r in body["recent"]}
    assert recent["inv_ok"]["state"] == "done" and recent["inv_ok"]["error"] is None
    assert recent["inv_bad"]["state"] == "failed"
    assert recent["inv_bad"]["error"]["code"] == "function_failed"
    text = out(cli("runs", "--failed", env=env))
    assert "inv_bad" in text and "[function_failed]" in text and "inv_ok" not in text
    assert recent["inv_ok"]["run"] in cli("runs", env={**env, "COLUMNS": "200"}).stdout

    graphs = {g["name"]: g for g in json.loads(cli("graphs", "--json", env=env).stdout)["graphs"]}
    assert graphs["inv_ok"]["ready"] and graphs["inv_ok"]["nodes"] == ["a"]
    assert "inv_ok" in cli("graphs", env=env).stdout

    cluster.kill_worker("doomed", signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # lost after two missed heartbeats (0.5 s each)
        rows = {w["name"]: w for w in json.loads(cli("workers", "--json", env=env).stdout)[
            "workers"]}
        if not rows["doomed"]["alive"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows["doomed"]["alive"] is False and rows["w1"]["alive"] is True
    text = out(cli("workers", env=env))
    assert "dead (last seen" in text and "alive" in text


# --- status --watch outlives its coordinator --------------------------------------------------

def test_status_watch_survives_the_coordinator_stopping(tmp_path: Path) -> None:
    spec = ClusterSpec.model_validate({"coordinator": {"curve": False}, "workers": []})
    log = tmp_path / "watch.log"
    with LocalCluster(spec) as lc:
        with lc.client(timeout_s=30) as c:
            c.status()  # it answers: the watch starts on a live coordinator
        with open(log, "w") as sink:
            clean = {k: v for k, v in os.environ.items() if not k.startswith("INTEROP_")}
            watch = subprocess.Popen([sys.executable, "-m", "interop_runtime", "status",
                                      "--watch", "-c", lc.address], stdout=sink,
                                     stderr=subprocess.STDOUT,
                                     env={**clean, "PYTHONUNBUFFERED": "1"})
            try:
                time.sleep(3)
                assert watch.poll() is None, log.read_text()
                assert lc.coordinator is not None
                lc.coordinator.terminate()
                lc.coordinator.wait(timeout=10)
                deadline = time.monotonic() + 30
                while "stopped answering" not in log.read_text() and \
                        time.monotonic() < deadline and watch.poll() is None:
                    time.sleep(0.2)
                assert watch.poll() is None  # it keeps retrying
            finally:
                watch.send_signal(signal.SIGINT)
                watch.wait(timeout=15)
    text = log.read_text()
    assert f"coordinator at {lc.address} stopped answering" in " ".join(text.split())
    assert "Traceback" not in text
