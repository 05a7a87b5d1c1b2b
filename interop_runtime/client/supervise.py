"""What happens to a local cluster's processes, told as events.

``LocalCluster`` starts the processes; this module says what became of them: a worker
starting, registered, failed, exited or restarting, the coordinator exiting. Each is one
``ClusterEvent`` handed to a callback (from the thread that saw it), so a terminal, a test
or a log can show it. ``Supervisor`` watches the processes of a started cluster and
restarts workers when the cluster file's ``supervise`` policy asks for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from interop_runtime.wire.errors import InteropError

if TYPE_CHECKING:
    from interop_runtime.client.client import Client
    from interop_runtime.client.cluster import LocalCluster

# the kinds of ClusterEvent, in the order a worker usually goes through them
STARTING, REGISTERED, FAILED, EXITED, RESTARTING = (
    "starting", "registered", "failed", "exited", "restarting")
COORDINATOR_EXITED = "coordinator_exited"
REGISTRATION_POLL_S = 0.5


@dataclass(frozen=True)
class ClusterEvent:
    kind: str
    message: str  # one line, ready to print
    worker: str | None = None  # None: the coordinator
    log: Path | None = None
    pid: int | None = None
    at: float = field(default_factory=time.monotonic)


EventSink = Callable[[ClusterEvent], None]


class ClusterStartError(InteropError):
    """The coordinator or a worker of a local cluster did not start; the message is one line
    that names the process, why, and its log."""


def last_log_line(path: Path) -> str:
    """The last line of a log that says something (not a box-drawing border of a traceback)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 8192))  # the tail is enough
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        text = line.strip().strip("│╰╯─╭╮ ")
        if text:
            return text[:300]
    return "(empty log)"


def exit_reason(returncode: int) -> str:
    """``signal 9`` or ``code 3``, as a shell would tell it."""
    return f"signal {-returncode}" if returncode < 0 else f"code {returncode}"


class Supervisor:
    """Watches a started cluster: reports every exit once (by pid), restarts workers with
    exponential backoff when the policy is enabled, and reports a restarted worker once the
    coordinator lists its new incarnation alive."""

    def __init__(self, cluster: LocalCluster, emit: EventSink, poll_s: float = 0.1) -> None:
        self.cluster = cluster
        self.emit = emit
        self.poll_s = poll_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="interop-supervisor",
                                        daemon=True)
        policy = cluster.spec.supervise
        now = time.monotonic()
        self._backoff = {w.name: policy.initial_backoff_s for w in cluster.spec.workers}
        self._started = {w.name: now for w in cluster.spec.workers}
        self._due: dict[str, float] = {}  # worker -> when to restart it
        self._pending: dict[str, int] = {}  # restarted worker -> its pid, not yet registered
        self._reported: set[int] = set()  # pids whose exit was told
        self._client: Client | None = None
        self._last_poll = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.poll_s):
                self._check_coordinator()
                self._check_workers()
                if self._pending:
                    self._check_registered()
        finally:
            if self._client is not None:
                self._client.close()

    def _check_coordinator(self) -> None:
        proc = self.cluster.coordinator
        if proc is None or proc.poll() is None or proc.pid in self._reported:
            return
        self._reported.add(proc.pid)
        log = self.cluster.log_dir / "coordinator.log"
        self.emit(ClusterEvent(COORDINATOR_EXITED, f"coordinator exited "
                               f"({exit_reason(proc.returncode)}); log: {log}", None, log,
                               proc.pid))

    def _check_workers(self) -> None:
        policy = self.cluster.spec.supervise
        for w in list(self.cluster.spec.workers):
            proc = self.cluster.workers.get(w.name)
            if proc is None or proc.poll() is None or w.name in self.cluster.retiring:
                continue  # running, or a drained replica leaving on purpose
            self._backoff.setdefault(w.name, policy.initial_backoff_s)  # a replica added later
            self._started.setdefault(w.name, 0.0)
            now = time.monotonic()
            log = self.cluster.log_dir / f"{w.name}.log"
            if proc.pid not in self._reported:
                self._reported.add(proc.pid)
                self._pending.pop(w.name, None)
                self.emit(ClusterEvent(EXITED, f"worker {w.name} exited "
                                       f"({exit_reason(proc.returncode)}); log: {log}",
                                       w.name, log, proc.pid))
                if not policy.enabled or self._stopping.is_set():
                    continue
                if now - self._started[w.name] > policy.stable_after_s:
                    self._backoff[w.name] = policy.initial_backoff_s
                wait = self._backoff[w.name]
                self._due[w.name] = now + wait
                self._backoff[w.name] = min(wait * 2, policy.max_backoff_s)
                self.emit(ClusterEvent(RESTARTING, f"restarting worker {w.name} in {wait:.1f} s",
                                       w.name, log))
            elif w.name in self._due and now >= self._due[w.name]:
                del self._due[w.name]
                if self._stopping.is_set():
                    return
                new = self.cluster.start_worker(w)
                self._started[w.name] = now
                self.cluster.restarts[w.name] = self.cluster.restarts.get(w.name, 0) + 1
                self._pending[w.name] = new.pid

    def _check_registered(self) -> None:
        now = time.monotonic()
        if now - self._last_poll < REGISTRATION_POLL_S:
            return
        self._last_poll = now
        if self._client is None:
            self._client = self.cluster.client(timeout_s=2.0)
        try:
            alive = {w["name"]: w["pid"] for w in self._client.workers() if w["alive"]}
        except InteropError:
            return  # the coordinator is busy or restarting: ask again later
        for name, pid in list(self._pending.items()):
            if alive.get(name) == pid:
                del self._pending[name]
                n = self.cluster.restarts.get(name, 0)
                self.emit(ClusterEvent(REGISTERED, f"worker {name} restarted and registered "
                                       f"(pid {pid}, restart {n})", name,
                                       self.cluster.log_dir / f"{name}.log", pid))
