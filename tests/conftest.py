"""Shared fixtures: real coordinator and worker processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from interop_runtime import ClusterSpec, LocalCluster
from interop_runtime.client.testing import numpy_worker


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


def lanes_graph(name: str = "lanes") -> Any:
    """w1 (scale x2) feeds w2 (add 1): the chain the lane tests run."""
    from interop_runtime import Graph

    g = Graph(name).node("a", "w1", "scale", factor=2.0)
    g.node("b", "w2", "add_const", value=1.0).edge("a.y", "b.x")
    return g.input("x", "a.x").output("y", "b.y")


@pytest.fixture(scope="module")
def lane_cluster() -> Iterator[LocalCluster]:
    """A secure (CURVE, roles) cluster of w1 and w2 on this host, with lanes_graph()."""
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5},
        "workers": [numpy_worker("w1", "scale"), numpy_worker("w2", "add_const")]})
    with LocalCluster(spec) as cluster:
        with cluster.client() as c:
            c.register(lanes_graph())
        yield cluster
