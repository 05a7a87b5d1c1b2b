"""A worker's bookkeeping without I/O: installed plans and the pending-input table.

Inputs for a node of a run arrive one edge at a time, from the coordinator or
from peer workers; when the last one arrives the node is ready. Entries expire
after a TTL so that a lost coordinator or a failed run never leaks memory here, and
their count and bytes are capped: beyond the cap, new inputs are refused with ``busy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interop_runtime.wire.errors import BadHeaderError, BusyError, UnknownTargetError
from interop_runtime.wire.payloads import PlanNode, WorkerPlan

DEFAULT_PENDING_TTL_S = 300.0  # the coordinator's default run deadline
CANCELLED_MEMORY_S = 60.0
MAX_PENDING_ENTRIES = 10_000  # half-fed (run, node) entries
MAX_PENDING_BYTES = 1 << 30  # tensor bytes they hold
MAX_CANCELLED = 100_000  # cancelled run ids remembered (oldest forgotten first)


@dataclass
class RunMeta:
    """What travels with a run's DATA besides tensors, merged over a node's inputs."""

    client: str | None = None  # a direct run's client routing id (hex)
    client_host: str | None = None
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # shared-memory leases to release once the node has run: (sender, handle)
    leases: list[tuple[bytes, Any]] = field(default_factory=list)
    place: dict[str, str] = field(default_factory=dict)  # pool node -> its replica

    def merge(self, other: RunMeta) -> None:
        self.client = self.client or other.client
        self.client_host = self.client_host or other.client_host
        self.timings.update(other.timings)
        self.leases.extend(other.leases)
        self.place = self.place or other.place


@dataclass
class Pending:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    first_at: float = 0.0
    last_at: float = 0.0
    meta: RunMeta = field(default_factory=RunMeta)


@dataclass
class Ready:
    graph: str
    run: str
    plan: PlanNode
    inputs: dict[str, np.ndarray]
    wait_s: float
    meta: RunMeta = field(default_factory=RunMeta)


class WorkerState:
    def __init__(self, pending_ttl_s: float = DEFAULT_PENDING_TTL_S, *,
                 max_pending: int = MAX_PENDING_ENTRIES,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.pending_ttl_s = pending_ttl_s
        self.max_pending, self.max_pending_bytes = max_pending, max_pending_bytes
        self.pending_bytes = 0
        self.plans: dict[str, dict[str, PlanNode]] = {}
        self.versions: dict[str, int] = {}
        self.pending: dict[tuple[str, str, str], Pending] = {}
        self.cancelled: dict[str, float] = {}  # run -> forget-after time

    def install(self, plan: WorkerPlan) -> None:
        self.plans[plan.graph] = {n.node: n for n in plan.nodes}
        self.versions[plan.graph] = plan.version

    def drop_graph(self, graph: str) -> None:
        self.plans.pop(graph, None)
        self.versions.pop(graph, None)
        for key in [k for k in self.pending if k[0] == graph]:
            self._drop(key)

    def plan_node(self, graph: str, node: str) -> PlanNode:
        nodes = self.plans.get(graph)
        if nodes is None:
            raise UnknownTargetError(f"no plan for graph {graph!r} on this worker", field="graph")
        plan = nodes.get(node)
        if plan is None:
            raise UnknownTargetError(f"graph {graph!r} has no node {node!r} on this worker",
                                     node=node, field="node")
        return plan

    def accept(self, graph: str, run: str, node: str, arrays: dict[str, np.ndarray], now: float,
               meta: RunMeta | None = None) -> Ready | None:
        """Add inputs for (run, node); return the node once all its inputs are in.

        Raises UnknownTargetError / BadHeaderError for data that fits no plan."""
        plan = self.plan_node(graph, node)
        if run in self.cancelled:
            return None  # late data for a cancelled or failed run: drop silently
        for name in arrays:
            if name not in plan.inputs:
                raise BadHeaderError(f"node {node!r} has no input {name!r} (inputs: "
                                     f"{', '.join(plan.inputs) or 'none'})", node=node, field=name)
        key = (graph, run, node)
        entry = self.pending.get(key)
        meta = meta or RunMeta()
        if entry is None and len(arrays) == len(plan.inputs):
            return Ready(graph, run, plan, dict(arrays), 0.0, meta)  # all in one message
        for name in arrays:
            if entry is not None and name in entry.arrays:
                raise BadHeaderError(f"input {node}.{name} of run {run!r} arrived twice",
                                     node=node, field=name)
        nbytes = sum(a.nbytes for a in arrays.values())
        if entry is None or len(entry.arrays) + len(arrays) < len(plan.inputs):
            self._make_room(nbytes, new_entry=entry is None)
        if entry is None:
            entry = self.pending[key] = Pending(first_at=now)
        entry.arrays.update(arrays)
        entry.meta.merge(meta)
        self.pending_bytes += nbytes
        entry.last_at = now
        if len(entry.arrays) == len(plan.inputs):
            self._drop(key)
            return Ready(graph, run, plan, entry.arrays, now - entry.first_at, entry.meta)
        return None

    def _make_room(self, nbytes: int, *, new_entry: bool) -> None:
        if new_entry and len(self.pending) >= self.max_pending:
            raise BusyError(f"{len(self.pending)} nodes are waiting for inputs on this worker, "
                            f"the most it keeps")
        if self.pending_bytes + nbytes > self.max_pending_bytes:
            raise BusyError(f"inputs waiting on this worker hold {self.pending_bytes} bytes; "
                            f"{nbytes} more would pass its limit of {self.max_pending_bytes}")

    def _drop(self, key: tuple[str, str, str]) -> None:
        entry = self.pending.pop(key, None)
        if entry is not None:
            self.pending_bytes -= sum(a.nbytes for a in entry.arrays.values())

    def cancel(self, run: str, now: float) -> int:
        """Forget a run's pending inputs and ignore its late data; returns entries dropped."""
        self.cancelled.pop(run, None)
        self.cancelled[run] = now + CANCELLED_MEMORY_S  # insertion order: oldest first
        while len(self.cancelled) > MAX_CANCELLED:
            del self.cancelled[next(iter(self.cancelled))]
        keys = [k for k in self.pending if k[1] == run]
        for key in keys:
            self._drop(key)
        return len(keys)

    def expire(self, now: float) -> list[tuple[str, str, str]]:
        stale = [k for k, p in self.pending.items() if now - p.first_at > self.pending_ttl_s]
        for key in stale:
            self._drop(key)
        for run in [r for r, t in self.cancelled.items() if t < now]:
            del self.cancelled[run]
        return stale
