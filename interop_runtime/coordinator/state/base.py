"""The tables every part of the coordinator's state shares, and the hooks one part
calls in another; ``CoordinatorState`` (machine.py) fills them in."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from interop_runtime.coordinator.metrics import CoordinatorMetrics
from interop_runtime.coordinator.state.admission import Admission
from interop_runtime.coordinator.state.authority import Authority
from interop_runtime.coordinator.state.records import PendingOp, RunRecord, Send, WorkerRecord
from interop_runtime.coordinator.store import Store
from interop_runtime.graph.compile import CompiledGraph
from interop_runtime.wire.errors import BusyError, InteropError
from interop_runtime.wire.payloads import GraphSpec


@dataclass
class Limits:
    """Bounds on every table a peer can grow."""

    max_workers: int = 2_000  # worker records, alive and dead
    dead_grace_s: float = 60.0  # a lost worker's record is kept this long, then pruned
    max_graphs: int = 1_000
    max_requests_per_client: int = 1_000  # forwarded requests and plan installs waiting
    max_reply_bytes: int = 768 << 10  # QUERY answers are cut to fit a header (1 MiB)
    max_early_done: int = 4_096  # DONEs for runs not yet known (direct runs), oldest first out
    early_done_s: float = 10.0  # ... and how long one is kept


class StateTables:
    store: Store
    metrics: CoordinatorMetrics
    admission: Admission
    authority: Authority
    caller_key: str | None  # the authenticated CURVE key of the message being handled
    epoch: str  # this coordinator process's random id; a restart changes it
    limits: Limits
    heartbeat_s: float
    dead_after_s: float
    default_run_timeout_s: float
    request_timeout_s: float
    workers: dict[str, WorkerRecord]
    graphs: dict[str, CompiledGraph]
    graph_specs: dict[str, tuple[int, GraphSpec]]
    runs: dict[str, RunRecord]
    wire_runs: dict[str, str]  # retry attempt id -> run id
    runs_by_worker: dict[str, set[str]]
    ops: dict[str, PendingOp]  # id of the message we sent -> op
    recent: deque[dict[str, Any]]
    # wire run -> (first arrival, its DONEs), oldest first: a direct run's completions that
    # came before its RUN
    early_done: OrderedDict[str, tuple[float, list[tuple[bytes, Any, dict[str, Any]]]]]
    finished_ok: int
    finished_failed: int

    # --- implemented by the signatures (signatures.py)
    def _after_register(self, worker: str) -> list[Send]:
        raise NotImplementedError

    # --- implemented by the registry (registry.py)
    def _worker_lost(self, w: WorkerRecord, why: str, now: float | None = None) -> list[Send]:
        raise NotImplementedError

    def _prune_dead(self, now: float, *, force: bool = False) -> None:
        raise NotImplementedError

    def _endpoints(self) -> dict[str, str]:
        raise NotImplementedError

    def _check_requests(self, client: bytes) -> None:
        """Bound the requests one connection may have waiting on workers."""
        if len(self.ops) < self.limits.max_requests_per_client:
            return  # no connection can be at its bound: skip the scan on the common path
        waiting = sum(1 for op in {id(o): o for o in self.ops.values()}.values()
                      if op.client == client)
        if waiting >= self.limits.max_requests_per_client:
            raise BusyError(f"this connection has {waiting} requests waiting on workers, the "
                            f"most one connection may have")

    def _compile(self, spec: GraphSpec, version: int) -> CompiledGraph:
        raise NotImplementedError

    def _send_plans(self, compiled: CompiledGraph, op: PendingOp | None) -> list[Send]:
        raise NotImplementedError

    # --- implemented by the plan staging (staging.py)
    def _reinstall_plans_for(self, worker: str, now: float) -> list[Send]:
        raise NotImplementedError

    def is_staged(self, graph: str, worker: str) -> bool:
        raise NotImplementedError

    def _on_staged_ack(self, peer: bytes, msg: Any) -> list[Send] | None:
        raise NotImplementedError

    def park_reply(self, worker: str, send: Send) -> bool:
        raise NotImplementedError

    def _forget_staged(self, worker: str) -> list[Send]:
        raise NotImplementedError

    # --- implemented by the replica pools (pools.py)
    def _recompile_pool(self, pool: str) -> list[Send]:
        raise NotImplementedError

    def _place_run(self, compiled: CompiledGraph, requested: dict[str, str] | None, run: str
                   ) -> dict[str, str]:
        raise NotImplementedError

    def _on_drain(self, peer: bytes, msg: Any, now: float) -> list[Send]:
        raise NotImplementedError

    def _pools(self) -> dict[str, list[str]]:
        raise NotImplementedError

    # --- implemented by the run bookkeeping (runs.py)
    def _retry_or_fail(self, rec: RunRecord, w: WorkerRecord, nodes: list[str], why: str
                       ) -> list[Send]:
        raise NotImplementedError

    def _resume_waiting_runs(self, worker: str, graph: str | None = None) -> list[Send]:
        raise NotImplementedError

    def _fail_run(self, rec: RunRecord, exc: InteropError) -> list[Send]:
        raise NotImplementedError


Handler = Any  # (state, peer, msg, arrays, now) -> list[Send]
