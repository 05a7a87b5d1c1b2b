"""Start a local coordinator and workers from a cluster spec, as real OS processes.

Cluster YAML::

    coordinator: {bind: "tcp://127.0.0.1:0", heartbeat_s: 1.0}
    workers:
      - name: w1
        plugin: numpy
        device: cpu
        python: /path/to/other/venv/bin/python   # optional: run under another interpreter
        config: {functions: {scale: "interop_runtime.worker.numpy_ops:scale"}}
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from interop_runtime.client.client import Client
from interop_runtime.transport.allowlist import Role, inferred_role
from interop_runtime.transport.security import Security, generate_keys
from interop_runtime.wire.errors import InteropError


class CoordinatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bind: str = "tcp://127.0.0.1:0"
    heartbeat_s: float = 1.0
    dead_after_s: float | None = None
    state: str = ":memory:"
    max_message_bytes: int | None = None
    # secure by default: fresh CURVE keys for every process of this cluster, one role each;
    # false runs plain text on loopback, which trusts every local process
    curve: bool = True
    metrics_port: int | None = None  # serve Prometheus metrics on 127.0.0.1:PORT
    max_runs: int | None = None  # runs in flight at most (admission control)
    max_runs_per_client: int | None = None
    log_format: str = "text"


class WorkerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    plugin: str
    device: str = "cpu"
    python: str | None = None
    config: dict[str, Any] = {}
    env: dict[str, str] = {}
    heartbeat_s: float | None = None
    bind: str | None = None  # the inbox address; "ipc" picks a socket file in the log dir
    shm: bool = True  # same-host shared memory for large tensors (off: frames only)
    shm_pool_mib: int | None = None  # the most its segments take (default 4 GiB)


class SupervisionSpec(BaseModel):
    """Restart workers that exit, waiting longer after each quick failure."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0  # a worker up this long gets its backoff reset


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    coordinator: CoordinatorSpec = CoordinatorSpec()
    workers: list[WorkerSpec] = []
    supervise: SupervisionSpec = SupervisionSpec()

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClusterSpec:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})


def _role_for(name: str, spec: ClusterSpec) -> Role:
    if name in {w.name for w in spec.workers}:
        return Role("worker", name)
    return inferred_role(name)


def free_tcp_address(host: str = "127.0.0.1") -> str:
    with socket.socket() as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"


def _cli(python: str | None) -> list[str]:
    return [python or sys.executable, "-m", "interop_runtime"]


class LocalCluster:
    """A coordinator plus workers as subprocesses; a context manager that cleans up."""

    def __init__(self, spec: ClusterSpec, *, log_dir: str | None = None,
                 ready_timeout_s: float = 120.0) -> None:
        self.spec = spec
        self.ready_timeout_s = ready_timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="interop-")
        self.log_dir = Path(log_dir or self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        bind = spec.coordinator.bind
        self.address = free_tcp_address() if bind.endswith(":0") else bind
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.keys_dir = self.log_dir / "keys"
        if spec.coordinator.curve:
            for name in ["coordinator", "client", *(w.name for w in spec.workers)]:
                generate_keys(self.keys_dir, name, role=_role_for(name, spec))

    def _key_args(self, name: str, *, server: bool = False) -> list[str]:
        if not self.spec.coordinator.curve:
            return ["--insecure"]
        if not (self.keys_dir / f"{name}.key_secret").exists():
            generate_keys(self.keys_dir, name, role=_role_for(name, self.spec))
        args = ["--key", str(self.keys_dir / f"{name}.key_secret"),
                "--authorized", str(self.keys_dir / "authorized")]
        if not server:
            args += ["--coordinator-key", str(self.keys_dir / "coordinator.key")]
        return args

    def security(self, name: str = "client") -> Security | None:
        """The CURVE identity for a client of this cluster (None when CURVE is off)."""
        if not self.spec.coordinator.curve:
            return None
        return Security.from_files(self.keys_dir / f"{name}.key_secret", None,
                                   self.keys_dir / "coordinator.key")

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{log_name}.log", "ab")
        # glibc then madvises big blocks for huge pages: a fresh 64 MiB receive buffer takes
        # 32 page faults instead of 16,384, which halved 64 MiB chain times (bench/)
        full_env = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", **os.environ,
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                start_new_session=True)

    def start_coordinator(self) -> None:
        c = self.spec.coordinator
        args = [*_cli(None), "coordinator", "start", "--bind", self.address,
                "--heartbeat", str(c.heartbeat_s), "--state", c.state]
        if c.dead_after_s is not None:
            args += ["--dead-after", str(c.dead_after_s)]
        if c.max_message_bytes:
            args += ["--max-message-bytes", str(c.max_message_bytes)]
        args += self._key_args("coordinator", server=True)
        if c.metrics_port is not None:
            args += ["--metrics-port", str(c.metrics_port)]
        if c.max_runs is not None:
            args += ["--max-runs", str(c.max_runs)]
        if c.max_runs_per_client is not None:
            args += ["--max-runs-per-client", str(c.max_runs_per_client)]
        args += ["--log-format", c.log_format]
        self.coordinator = self._spawn(args, "coordinator")

    def start_worker(self, w: WorkerSpec) -> subprocess.Popen[bytes]:
        config = self.log_dir / f"{w.name}.config.yaml"
        config.write_text(yaml.safe_dump(w.config))
        heartbeat = w.heartbeat_s or self.spec.coordinator.heartbeat_s
        args = [*_cli(w.python), "worker", "start", "--plugin", w.plugin, "--config", str(config),
                "--coordinator", self.address, "--name", w.name, "--device", w.device,
                "--heartbeat", str(heartbeat), "--log-format", self.spec.coordinator.log_format,
                "--bind", self._worker_bind(w), *([] if w.shm else ["--no-shm"]),
                *(["--shm-pool-mib", str(w.shm_pool_mib)] if w.shm_pool_mib else []),
                *self._key_args(w.name)]
        proc = self._spawn(args, w.name, w.env)
        self.workers[w.name] = proc
        return proc

    def _worker_bind(self, w: WorkerSpec) -> str:
        if w.bind == "ipc":
            return f"ipc://{self.log_dir / w.name}.inbox"
        return w.bind or "tcp://127.0.0.1:0"

    def start(self) -> LocalCluster:
        self.start_coordinator()
        for w in self.spec.workers:
            self.start_worker(w)
        self.wait_ready([w.name for w in self.spec.workers])
        if self.spec.supervise.enabled:
            self._supervisor = threading.Thread(target=self._supervise, name="interop-supervisor",
                                                daemon=True)
            self._supervisor.start()
        return self

    def _supervise(self) -> None:
        """Restart any worker process that exits, with exponential backoff per worker."""
        policy = self.spec.supervise
        backoff = {w.name: policy.initial_backoff_s for w in self.spec.workers}
        started = {w.name: time.monotonic() for w in self.spec.workers}
        due: dict[str, float] = {}
        while not self._stopping.wait(0.1):
            for w in self.spec.workers:
                proc = self.workers.get(w.name)
                if proc is None or proc.poll() is None:
                    continue
                now = time.monotonic()
                if w.name not in due:
                    if now - started[w.name] > policy.stable_after_s:
                        backoff[w.name] = policy.initial_backoff_s
                    due[w.name] = now + backoff[w.name]
                    backoff[w.name] = min(backoff[w.name] * 2, policy.max_backoff_s)
                elif now >= due[w.name]:
                    del due[w.name]
                    if self._stopping.is_set():
                        return
                    self.start_worker(w)
                    started[w.name] = now
                    self.restarts[w.name] = self.restarts.get(w.name, 0) + 1

    def wait_ready(self, names: list[str], timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        with self.client(timeout_s=2.0) as client:
            while True:
                for name, proc in self.workers.items():
                    if name in names and proc.poll() is not None:
                        raise InteropError(f"worker {name!r} exited with code {proc.returncode} "
                                           f"while starting:\n{self.log_tail(name)}", worker=name)
                try:  # alive, and the incarnation we started (not a stale record)
                    alive = {w["name"] for w in client.workers() if w["alive"] and (
                        w["name"] not in self.workers or w["pid"] == self.workers[w["name"]].pid)}
                except InteropError:
                    alive = set()
                if set(names) <= alive:
                    return
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(set(names) - alive))
                    raise InteropError(f"workers not registered in time: {missing}\n" +
                                       "\n".join(self.log_tail(n) for n in names if n not in alive))
                time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers[name]
        proc.send_signal(sig)
        proc.wait(timeout=10)

    def restart_coordinator(self) -> None:
        """Stop the coordinator (SIGTERM) and start it again on the same address."""
        if self.coordinator and self.coordinator.poll() is None:
            self.coordinator.terminate()
            self.coordinator.wait(timeout=10)
        self.start_coordinator()

    def connection(self) -> dict[str, str]:
        """What a client outside this process needs, as environment variables the CLI reads
        (like Jupyter's token): the address, the client's secret key, the coordinator's key."""
        env = {"INTEROP_COORDINATOR": self.address}
        if self.spec.coordinator.curve:
            env["INTEROP_KEY"] = str(self.keys_dir / "client.key_secret")
            env["INTEROP_COORDINATOR_KEY"] = str(self.keys_dir / "coordinator.key")
        return env

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("security", self.security())
        return Client(self.address, **kwargs)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor:
            self._supervisor.join(timeout=5)
        procs = [*self.workers.values(), *([self.coordinator] if self.coordinator else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
