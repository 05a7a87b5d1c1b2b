"""A worker's own metrics: calls, errors and compute time per function, bytes in and out,
memory. The main loop counts; the heartbeat thread reads a snapshot and sends it to the
coordinator, which serves them as ``interop_worker_*`` series (README "Observability")."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from interop_runtime.wire.codec import Envelope
from interop_runtime.wire.messages import MAX_STATS_FUNCTIONS, FunctionStats, WorkerStats

log = logging.getLogger("interop.worker")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tensor_bytes(env: Envelope) -> int:
    """The tensor bytes a message brought, in frames or in shared memory."""
    return (sum(a.nbytes for a in env.arrays.values())
            + sum(m.shm.len for m in env.shared.values() if m.shm is not None))


def rss_bytes() -> int | None:
    """This process's resident memory now (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def device_bytes(plugin: Any) -> int | None:
    """Device memory in use, through the plugin's optional ``device_memory()`` hook; None
    when it has none or cannot tell (on CPU, say)."""
    hook = getattr(plugin, "device_memory", None)
    if hook is None:
        return None
    try:
        value = hook()
    except Exception:  # a metric must never cost the worker
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


class WorkerMetrics:
    """Totals since start. Counted on the main loop, read on the heartbeat thread: a lock
    keeps the function table consistent while it is copied."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> [calls, errors, compute_us, batches, batched_runs]
        self._functions: dict[str, list[int]] = {}
        self.batched: set[str] = set()  # functions with a batcher: they report batch counts
        self.bytes_in = 0
        self.bytes_out = 0

    def call(self, function: str, compute_us: int, ok: bool) -> None:
        with self._lock:
            row = self._row(function)
            if row is not None:
                row[0] += 1
                row[1] += 0 if ok else 1
                row[2] += max(0, compute_us)

    def batch(self, function: str, runs: int) -> None:
        """A batcher's call went through for ``runs`` runs (mean size: batched_runs / batches)."""
        with self._lock:
            row = self._row(function)
            if row is not None:
                row[3] += 1
                row[4] += runs

    def _row(self, function: str) -> list[int] | None:
        row = self._functions.get(function)
        if row is None:
            if len(self._functions) >= MAX_STATS_FUNCTIONS:
                return None  # the plugin's functions are few; stay bounded anyway
            row = self._functions[function] = [0, 0, 0, 0, 0]
        return row

    def snapshot(self, pending: int = 0, plugin: Any = None) -> WorkerStats:
        with self._lock:
            functions = {n: FunctionStats(calls=c, errors=e, compute_us=us,
                                          **({"batches": b, "batched_runs": r}
                                             if n in self.batched else {}))
                         for n, (c, e, us, b, r) in self._functions.items()}
        return WorkerStats(functions=functions, pending=max(0, pending), bytes_in=self.bytes_in,
                           bytes_out=self.bytes_out, rss_bytes=rss_bytes(),
                           device_bytes=device_bytes(plugin))
