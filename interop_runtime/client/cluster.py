"""Start a local coordinator and workers from a cluster spec (clusterspec.py, the cluster
file's models, re-exported here), as real OS processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from interop_runtime.client.client import Client
from interop_runtime.client.clusterspec import (  # noqa: F401 - re-exported
    MAX_REPLICAS,
    ClusterSpec,
    CoordinatorSpec,
    SupervisionSpec,
    WorkerSpec,
    _role_for,
    pool_limits,
)
from interop_runtime.client.supervise import (
    FAILED,
    REGISTERED,
    STARTING,
    ClusterEvent,
    ClusterStartError,
    EventSink,
    Supervisor,
    last_log_line,
)
from interop_runtime.transport.allowlist import Role
from interop_runtime.transport.security import Security, generate_keys
from interop_runtime.wire.errors import InteropError


def free_tcp_address(host: str = "127.0.0.1") -> str:
    with socket.socket() as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"


def client_from_env(**kwargs: Any) -> Client:
    """A client for the cluster whose ``export`` lines (``interop up``) are in the
    environment: ``$INTEROP_COORDINATOR`` (default ``tcp://127.0.0.1:5555``) and, under
    CURVE, ``$INTEROP_KEY`` and ``$INTEROP_COORDINATOR_KEY``."""
    key = os.environ.get("INTEROP_KEY")
    if key and "security" not in kwargs:
        kwargs["security"] = Security.from_files(key, None,
                                                 os.environ.get("INTEROP_COORDINATOR_KEY"))
    return Client(os.environ.get("INTEROP_COORDINATOR", "tcp://127.0.0.1:5555"), **kwargs)


def _cli(python: str | None) -> list[str]:
    return [python or sys.executable, "-m", "interop_runtime"]


class LocalCluster:
    """A coordinator plus workers as subprocesses; a context manager that cleans up."""

    def __init__(self, spec: ClusterSpec, *, log_dir: str | None = None,
                 ready_timeout_s: float = 120.0, on_event: EventSink | None = None) -> None:
        self.spec = spec
        self.ready_timeout_s = ready_timeout_s
        self.on_event = on_event  # told what happens to the processes (from any thread)
        self.epoch: str | None = None  # our coordinator's, once it answered a ping
        self._coord_log_from = 0  # where this start's coordinator log lines begin
        self._tmp = tempfile.TemporaryDirectory(prefix="interop-")
        self.log_dir = Path(log_dir or self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        bind = spec.coordinator.bind
        self.address = free_tcp_address() if bind.endswith(":0") else bind
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}
        self.retiring: set[str] = set()  # replicas drained on purpose: their exit is no failure
        self.skipped: dict[str, str] = {}  # on_load_error: skip workers that failed -> why
        self._supervisor: Supervisor | None = None
        self.keys_dir = self.log_dir / "keys"
        if spec.coordinator.curve:
            for name in ["coordinator", "client", *(w.name for w in spec.workers)]:
                generate_keys(self.keys_dir, name, role=_role_for(name, spec))
            for pool, most in pool_limits(spec).items():  # replicas `scale` may add later
                for i in range(most):
                    if not (self.keys_dir / f"{pool}-{i}.key").exists():
                        generate_keys(self.keys_dir, f"{pool}-{i}",
                                      role=Role("worker", f"{pool}-{i}", pool))

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
        if c.dashboard_port is not None:
            args += ["--dashboard-port", str(c.dashboard_port)]
        args += ["--log-format", c.log_format]
        log = self.log_dir / "coordinator.log"
        self._coord_log_from = log.stat().st_size if log.exists() else 0
        self.coordinator = self._spawn(args, "coordinator")

    def wait_coordinator(self, timeout_s: float = 30.0) -> None:
        """Until OUR coordinator serves: its own log says it bound the address and it answers
        a ping. Another process holding the port answers pings too, so a ping alone proves
        nothing; a coordinator that could not bind exits, and that is the error."""
        assert self.coordinator is not None
        log = self.log_dir / "coordinator.log"
        deadline = time.monotonic() + timeout_s
        with self.client(timeout_s=1.0) as client:
            while True:
                if self.coordinator.poll() is not None:
                    raise ClusterStartError(f"coordinator failed to start on {self.address}: "
                                            f"{last_log_line(log)} (log: {log})")
                if self._coordinator_bound(log):
                    try:
                        self.epoch = client.control("coordinator", "ping").get("epoch")
                        return
                    except InteropError:
                        pass  # bound, not serving yet
                if time.monotonic() > deadline:
                    raise ClusterStartError(f"coordinator on {self.address} did not answer in "
                                            f"{timeout_s:.0f} s: {last_log_line(log)} "
                                            f"(log: {log})")
                time.sleep(0.1)

    def _coordinator_bound(self, log: Path) -> bool:
        try:
            with log.open("rb") as f:
                f.seek(self._coord_log_from)
                return b"coordinator listening on" in f.read(1 << 20)
        except OSError:
            return False

    def _emit(self, kind: str, message: str, worker: str | None = None) -> None:
        if self.on_event is not None:
            proc = self.workers.get(worker) if worker else self.coordinator
            self.on_event(ClusterEvent(kind, message, worker,
                                       self.log_dir / f"{worker or 'coordinator'}.log",
                                       proc.pid if proc else None))

    def start_worker(self, w: WorkerSpec) -> subprocess.Popen[bytes]:
        config = self.log_dir / f"{w.name}.config.yaml"
        config.write_text(yaml.safe_dump(w.config))
        heartbeat = w.heartbeat_s or self.spec.coordinator.heartbeat_s
        args = [*_cli(w.python), "worker", "start", "--plugin", w.plugin, "--config", str(config),
                "--coordinator", self.address, "--name", w.name, "--device", w.device,
                "--heartbeat", str(heartbeat), "--log-format", self.spec.coordinator.log_format,
                "--bind", self._worker_bind(w), *([] if w.shm else ["--no-shm"]),
                *(["--shm-pool-mib", str(w.shm_pool_mib)] if w.shm_pool_mib else []),
                *(["--pool", w.pool] if w.pool else []),
                *(["--model-repository", w.model_repository] if w.model_repository else []),
                *(["--model-root", os.pathsep.join([w.model_root] if isinstance(
                    w.model_root, str) else w.model_root)] if w.model_root else []),
                *self._key_args(w.name)]
        proc = self._spawn(args, w.name, w.env)
        self.workers[w.name] = proc
        return proc

    def _worker_bind(self, w: WorkerSpec) -> str:
        if w.bind == "ipc":
            return f"ipc://{self.log_dir / w.name}.inbox"
        return w.bind or "tcp://127.0.0.1:0"

    def start(self) -> LocalCluster:
        """Start the coordinator, wait until it serves, then the workers, and wait until
        each is registered; a failure raises ``ClusterStartError`` (one line)."""
        self.start_coordinator()
        self.wait_coordinator()
        for w in self.spec.workers:
            self.start_worker(w)
            self._emit(STARTING, f"worker {w.name} starting", w.name)
        self.wait_ready([w.name for w in self.spec.workers])
        # always watching, so that exits are told; restarting only when the policy says so
        self._supervisor = Supervisor(self, self.on_event or (lambda _: None))
        self._supervisor.start()
        return self

    def wait_ready(self, names: list[str], timeout_s: float | None = None) -> None:
        """Until the coordinator lists each of ``names`` alive, as the incarnation we started;
        a worker or the coordinator exiting first raises ``ClusterStartError``."""
        timeout_s = timeout_s or self.ready_timeout_s
        deadline = time.monotonic() + timeout_s
        ready: set[str] = set()
        with self.client(timeout_s=2.0) as client:
            while True:
                self._check_started(names)
                try:  # alive, and the incarnation we started (not a stale record)
                    alive = {w["name"] for w in client.workers() if w["alive"] and (
                        w["name"] not in self.workers or w["pid"] == self.workers[w["name"]].pid)}
                except InteropError:
                    alive = set()
                for name in sorted((alive & set(names)) - ready):
                    ready.add(name)
                    self._emit(REGISTERED, f"worker {name} registered", name)
                if set(names) - set(self.skipped) <= alive:
                    return
                if time.monotonic() > deadline:
                    missing = sorted(set(names) - alive - set(self.skipped))
                    logs = ", ".join(str(self.log_dir / f"{n}.log") for n in missing)
                    raise ClusterStartError(f"workers not registered after {timeout_s:.0f} s: "
                                            f"{', '.join(missing)} (log: {logs})")
                time.sleep(0.1)

    def _check_started(self, names: list[str]) -> None:
        if self.coordinator is not None and self.coordinator.poll() is not None:
            log = self.log_dir / "coordinator.log"
            raise ClusterStartError(f"coordinator exited while workers started: "
                                    f"{last_log_line(log)} (log: {log})")
        for name, proc in list(self.workers.items()):
            if name in names and proc.poll() is not None:
                log = self.log_dir / f"{name}.log"
                message = f"worker {name} failed to start: {last_log_line(log)} (log: {log})"
                if self._skip(name, message):
                    continue
                self._emit(FAILED, message, name)
                raise ClusterStartError(message, worker=name)

    def _skip(self, name: str, message: str) -> bool:
        """A failed worker with ``on_load_error: skip``: told, forgotten, not waited for."""
        if all(w.on_load_error != "skip" for w in self.spec.workers if w.name == name):
            return False
        self._emit(FAILED, f"{message}; skipped (on_load_error: skip)", name)
        self.skipped[name] = message
        del self.workers[name]  # not watched, not restarted
        return True

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

    def scale(self, pool: str, count: int, timeout_s: float = 120.0) -> list[str]:
        """Give replica pool ``pool`` ``count`` replicas while runs flow: new ones start and
        register; the newest drain (their runs finish) and stop. Returns the replicas."""
        from interop_runtime.client.scaling import scale_pool

        return scale_pool(self, pool, count, timeout_s)

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("security", self.security())
        return Client(self.address, **kwargs)

    def urls(self) -> dict[str, str]:
        """The metrics and dashboard URLs the coordinator logged at start (port 0 picks a
        free one, so only its log knows; a secure dashboard's URL carries its token)."""
        try:
            text = (self.log_dir / "coordinator.log").read_text(errors="replace")
        except OSError:
            return {}
        found = {}
        for kind in ("metrics", "dashboard"):
            hits = re.findall(rf"{kind} at (http://\S+)", text)
            if hits:
                found[kind] = hits[-1]
        return found

    def describe(self) -> dict[str, Any]:
        """What ``cluster.json`` keeps: the address, the pids, the logs and the key paths."""
        def proc(p: subprocess.Popen[bytes] | None, name: str) -> dict[str, Any]:
            return {"pid": p.pid if p else None, "log": str(self.log_dir / f"{name}.log")}
        keys = ({"client_key": str(self.keys_dir / "client.key_secret"),
                 "coordinator_key": str(self.keys_dir / "coordinator.key")}
                if self.spec.coordinator.curve else {})
        return {"address": self.address, "epoch": self.epoch, "log_dir": str(self.log_dir),
                "coordinator": proc(self.coordinator, "coordinator"), "keys": keys,
                "workers": {n: proc(p, n) for n, p in self.workers.items()},
                "env": self.connection()}

    def stop(self) -> None:
        if self._supervisor:
            self._supervisor.stop()
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
