"""The tables every part of the coordinator's state shares, and the hooks one part
calls in another; ``CoordinatorState`` (machine.py) fills them in."""

from __future__ import annotations

from typing import Any

from interop_runtime.coordinator.metrics import CoordinatorMetrics
from interop_runtime.coordinator.state.admission import Admission
from interop_runtime.coordinator.state.records import PendingOp, RunRecord, Send, WorkerRecord
from interop_runtime.coordinator.store import Store
from interop_runtime.graph.compile import CompiledGraph
from interop_runtime.wire.errors import InteropError
from interop_runtime.wire.payloads import GraphSpec


class StateTables:
    store: Store
    metrics: CoordinatorMetrics
    admission: Admission
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
    finished_ok: int
    finished_failed: int

    # --- implemented by the registry (registry.py)
    def _worker_lost(self, w: WorkerRecord, why: str) -> list[Send]:
        raise NotImplementedError

    def _endpoints(self) -> dict[str, str]:
        raise NotImplementedError

    # --- implemented by the run bookkeeping (runs.py)
    def _retry_or_fail(self, rec: RunRecord, w: WorkerRecord, nodes: list[str], why: str
                       ) -> list[Send]:
        raise NotImplementedError

    def _resume_waiting_runs(self, worker: str) -> list[Send]:
        raise NotImplementedError

    def _fail_run(self, rec: RunRecord, exc: InteropError) -> list[Send]:
        raise NotImplementedError


Handler = Any  # (state, peer, msg, arrays, now) -> list[Send]
