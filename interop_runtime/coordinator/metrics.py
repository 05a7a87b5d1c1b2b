"""The coordinator's metrics: runs, latencies per node, bytes, liveness, and each worker's own
metrics from its heartbeats (``interop_worker_*``).

They are counted in plain tables here, on the main loop, at the cost of a dict lookup;
coordinator/exposition.py renders them for Prometheus. prometheus_client is loaded only when
/metrics is served: counting through it cost the coordinator ~10% of its CPU per run (a lock
and a label check per update), and importing it ~5 MiB of an idle coordinator's memory
(issue 10, goal 6)."""

from __future__ import annotations

import bisect
import threading
from typing import Any, Literal

from interop_runtime.wire.messages import WorkerStats

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Kind = Literal["counter", "gauge", "histogram"]


class Value:
    """One series of a counter or a gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class Buckets:
    """One series of a histogram: a count per upper bound (not cumulative), sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class Family:
    """A metric and its series, one per set of label values. Label values come from names
    that peers choose, so callers remove a series when its worker or graph goes."""

    def __init__(self, kind: Kind, name: str, doc: str, labels: tuple[str, ...] = (),
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.kind, self.name, self.doc, self.label_names = kind, name, doc, labels
        self.buckets = buckets
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")
            child = Buckets(self.buckets) if self.kind == "histogram" else Value()
            self._children[values] = child
        return child

    def series(self) -> list[tuple[tuple[str, ...], Any]]:
        return list(self._children.items())  # a copy: the HTTP thread reads while we count

    def remove(self, *values: str) -> None:
        self._children.pop(values, None)

    def remove_where(self, position: int, value: str) -> None:
        """Drop every series whose label at ``position`` is ``value`` (a dropped graph, a
        pruned worker): label sets must not grow with names a peer chooses."""
        for values in [v for v in self._children if v[position] == value]:
            self.remove(*values)

    # the unlabelled families (runs in flight) count on their one series
    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self.labels().dec(amount)


class WorkerStatsTable:
    """The last stats each worker sent. The state machine writes (``update``/``forget``);
    the HTTP thread reads (``workers``): a lock guards the table, and it holds one entry
    per registered worker, no more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, WorkerStats] = {}

    def update(self, worker: str, stats: WorkerStats, functions: Any = None) -> None:
        if functions is not None:  # only functions the worker registered: no free labels
            stats = stats.model_copy(update={"functions": {
                n: f for n, f in stats.functions.items() if n in functions}})
        with self._lock:
            self._stats[worker] = stats

    def forget(self, worker: str) -> None:
        with self._lock:
            self._stats.pop(worker, None)

    def workers(self) -> dict[str, WorkerStats]:
        with self._lock:
            return dict(self._stats)


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.runs = Family("counter", "interop_runs", "Runs finished, by graph and outcome",
                           ("graph", "outcome"))
        self.runs_active = Family("gauge", "interop_runs_active", "Runs in flight")
        self.run_latency = Family("histogram", "interop_run_latency_seconds",
                                  "End-to-end run latency", ("graph",))
        self.node_compute = Family("histogram", "interop_node_compute_seconds",
                                   "Time inside the plugin per node", ("graph", "node", "worker"))
        self.bytes = Family("counter", "interop_bytes_routed", "Tensor bytes moved, by path",
                            ("path",))
        self.messages = Family("counter", "interop_messages", "Messages received, by kind",
                               ("kind",))
        self.bad_messages = Family("counter", "interop_bad_messages",
                                   "Messages rejected, by error code", ("code",))
        self.worker_alive = Family("gauge", "interop_worker_alive", "1 if the worker is alive",
                                   ("worker", "plugin", "device"))
        self.worker_stats = WorkerStatsTable()

    def families(self) -> list[Family]:
        return [self.runs, self.runs_active, self.run_latency, self.node_compute, self.bytes,
                self.messages, self.bad_messages, self.worker_alive]
