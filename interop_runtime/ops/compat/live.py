"""Compatibility of two live workers: their models fetched through the client, then
compared (report.py does the comparison and needs no connection)."""

from __future__ import annotations

from interop_runtime.client import Client
from interop_runtime.ops.compat.report import CompatReport, compare


def compare_workers(client: Client, worker_a: str, worker_b: str) -> CompatReport:
    """Compare two live workers' models: structure, parameter pairs with their transforms,
    inputs and outputs, and a verdict on parameter transfer."""
    return compare(client.model_graph(worker_a), client.model_graph(worker_b), worker_a, worker_b)
