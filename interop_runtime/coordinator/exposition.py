"""The coordinator's metrics in Prometheus' text format, through prometheus_client: imported
only by the HTTP server that serves /metrics (coordinator/health.py), never on the main loop."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from interop_runtime.coordinator.metrics import CoordinatorMetrics, Family
from interop_runtime.wire.messages import WorkerStats


def registry(metrics: CoordinatorMetrics) -> CollectorRegistry:
    """A registry whose one collector reads ``metrics`` when scraped."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TablesCollector(metrics))
    return reg


class TablesCollector(Collector):
    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for family in self.metrics.families():
            yield _family(family)
        yield from worker_families(self.metrics.worker_stats.workers())


def _family(f: Family) -> Metric:
    labels = list(f.label_names)
    if f.kind == "histogram":
        hist = HistogramMetricFamily(f.name, f.doc, labels=labels)
        for values, b in f.series():
            cumulative, running = [], 0
            for bound, n in zip((*map(str, f.buckets), "+Inf"), b.counts, strict=True):
                running += n
                cumulative.append((bound, running))
            hist.add_metric(list(values), cumulative, b.sum)
        return hist
    out: CounterMetricFamily | GaugeMetricFamily = (
        CounterMetricFamily(f.name, f.doc, labels=labels) if f.kind == "counter"
        else GaugeMetricFamily(f.name, f.doc, labels=labels))
    for values, v in f.series():
        out.add_metric(list(values), v.value)
    return out


def worker_families(table: dict[str, WorkerStats]) -> Iterator[Metric]:
    """The last stats each worker sent, as ``interop_worker_*`` series labelled by worker."""
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
    yield from (calls, errors, compute, batches, batched, pending, bytes_in, bytes_out, rss,
                device)
