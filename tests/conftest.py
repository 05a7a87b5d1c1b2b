"""Shared fixtures: real coordinator and worker processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from interop_runtime import ClusterSpec, LocalCluster
from interop_runtime.client.testing import numpy_worker  # noqa: F401 - re-exported for tests


@pytest.fixture
def start_cluster() -> Iterator[Callable[..., LocalCluster]]:
    """Start a LocalCluster from worker spec dicts; stopped at teardown."""
    started: list[LocalCluster] = []

    def start(*workers: dict[str, Any], heartbeat_s: float = 0.5, **coordinator: Any
              ) -> LocalCluster:
        spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": heartbeat_s, **coordinator},
                                           "workers": list(workers)})
        cluster = LocalCluster(spec)
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.stop()
