"""Prometheus metrics for the coordinator: runs, latencies per node, bytes, liveness, and
each worker's own metrics from its heartbeats (``interop_worker_*``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from interop_runtime.wire.messages import WorkerStats

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Cached:
    """A labelled metric whose children are looked up once: ``labels()`` takes a lock and
    builds tuples on every call, which showed as ~12% of the coordinator's CPU per run."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child

    def remove(self, *values: str) -> None:
        if self._children.pop(values, None) is not None:
            self.metric.remove(*values)

    def remove_where(self, position: int, value: str) -> None:
        """Drop every child whose label at ``position`` is ``value`` (a dropped graph, a
        pruned worker): label sets must not grow with names a peer chooses."""
        for values in [v for v in self._children if v[position] == value]:
            self.remove(*values)


class WorkerStatsCollector(Collector):
    """The last stats each worker sent, as ``interop_worker_*`` series labelled by worker.
    The state machine writes (``update``/``forget``); the HTTP thread reads (``collect``):
    a lock guards the table, and it holds one entry per registered worker, no more."""

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

    def collect(self) -> Iterator[Metric]:
        table = self.workers()
        calls = CounterMetricFamily("interop_worker_calls", "Function calls on a worker",
                                    labels=["worker", "function"])
        errors = CounterMetricFamily("interop_worker_errors", "Function calls that failed",
                                     labels=["worker", "function"])
        compute = CounterMetricFamily("interop_worker_compute_seconds",
                                      "Time inside the plugin, per function",
                                      labels=["worker", "function"])
        batches = CounterMetricFamily("interop_worker_batches",
                                      "Calls a dynamic batcher made, per batched function",
                                      labels=["worker", "function"])
        batched = CounterMetricFamily("interop_worker_batched_runs",
                                      "Runs those batched calls served (over batches: the "
                                      "mean batch)", labels=["worker", "function"])
        pending = GaugeMetricFamily("interop_worker_queue_depth",
                                    "Nodes waiting for inputs on a worker", labels=["worker"])
        bytes_in = CounterMetricFamily("interop_worker_bytes_in", "Tensor bytes a worker received",
                                       labels=["worker"])
        bytes_out = CounterMetricFamily("interop_worker_bytes_out",
                                        "Tensor bytes a worker sent", labels=["worker"])
        rss = GaugeMetricFamily("interop_worker_rss_bytes", "A worker's resident memory",
                                labels=["worker"])
        device = GaugeMetricFamily("interop_worker_device_memory_bytes",
                                   "Device memory in use on a worker (when its plugin can tell)",
                                   labels=["worker"])
        for worker, st in sorted(table.items()):
            for fn, f in sorted(st.functions.items()):
                calls.add_metric([worker, fn], f.calls)
                errors.add_metric([worker, fn], f.errors)
                compute.add_metric([worker, fn], f.compute_us / 1e6)
                if f.batches is not None:
                    batches.add_metric([worker, fn], f.batches)
                    batched.add_metric([worker, fn], f.batched_runs or 0)
            pending.add_metric([worker], st.pending)
            bytes_in.add_metric([worker], st.bytes_in)
            bytes_out.add_metric([worker], st.bytes_out)
            if st.rss_bytes is not None:
                rss.add_metric([worker], st.rss_bytes)
            if st.device_bytes is not None:
                device.add_metric([worker], st.device_bytes)
        yield from (calls, errors, compute, batches, batched, pending, bytes_in, bytes_out,
                    rss, device)


class CoordinatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs = _Cached(Counter("interop_runs", "Runs finished, by graph and outcome",
                            ["graph", "outcome"], registry=r))
        self.runs_active = Gauge("interop_runs_active", "Runs in flight", registry=r)
        self.run_latency = _Cached(Histogram("interop_run_latency_seconds", "End-to-end run latency",
                                     ["graph"], buckets=LATENCY_BUCKETS, registry=r))
        self.node_compute = _Cached(Histogram("interop_node_compute_seconds",
                                      "Time inside the plugin per node",
                                      ["graph", "node", "worker"], buckets=LATENCY_BUCKETS,
                                      registry=r))
        self.bytes = _Cached(Counter("interop_bytes_routed", "Tensor bytes moved, by path", ["path"],
                             registry=r))
        self.messages = _Cached(Counter("interop_messages", "Messages received, by kind", ["kind"],
                                registry=r))
        self.bad_messages = _Cached(Counter("interop_bad_messages", "Messages rejected, by error code",
                                    ["code"], registry=r))
        self.worker_alive = _Cached(Gauge("interop_worker_alive", "1 if the worker is alive",
                                  ["worker", "plugin", "device"], registry=r))
        self.worker_stats = WorkerStatsCollector()
        r.register(self.worker_stats)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Expose /metrics over HTTP; returns the port (0 picks a free one)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)
