"""Talking to a cluster: ``Client`` (client), what it returns (results), and
``LocalCluster`` to start a coordinator and workers as local processes (cluster), with
helpers for tests (testing).

Imports: wire, transport and graph. Processes are started through the CLI, never imported.
"""

from interop_runtime.client.client import Client
from interop_runtime.client.cluster import ClusterSpec, CoordinatorSpec, LocalCluster, WorkerSpec
from interop_runtime.client.results import Params, RunResult

__all__ = ["Client", "ClusterSpec", "CoordinatorSpec", "LocalCluster", "Params", "RunResult",
           "WorkerSpec"]
