"""Idle cost and start-up: what a cluster costs before it does any work.

ours: a LocalCluster with the coordinator and 3 NumPy workers, in the default secure mode;
      start = LocalCluster.start() until every worker is registered; RSS of each process
      a second later.
ray:  ray.init() with 3 idle actors; start = init until the actors answer; RSS summed over
      every process Ray started (raylet, GCS, dashboard, workers), a second later.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from interop_runtime import ClusterSpec, LocalCluster
from interop_runtime.client.testing import numpy_worker

from .common import ResultFile, rss_bytes, sigterm_raises

MIB = 1 << 20


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def ours() -> dict[str, float]:
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 1.0}, "workers": [
        numpy_worker(f"w{i}", "identity") for i in (1, 2, 3)]})
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(spec, log_dir=tmp)
        t0 = time.perf_counter()
        cluster.start()
        try:
            started = time.perf_counter() - t0
            time.sleep(1.0)
            assert cluster.coordinator is not None
            coordinator = rss_bytes(cluster.coordinator.pid)
            workers = [rss_bytes(p.pid) for p in cluster.workers.values()]
        finally:
            cluster.stop()
    return {"n": 1, "start_s": started, "coordinator_mib": coordinator / MIB,
            "worker_mib": sum(workers) / len(workers) / MIB,
            "coordinator_plus_one_worker_mib": (coordinator + workers[0]) / MIB,
            "cluster_mib": (coordinator + sum(workers)) / MIB}


def ray_idle() -> dict[str, float]:
    import ray

    before = set(children(os.getpid()))
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")

    @ray.remote
    class Idle:
        def ping(self) -> int:
            return 1

    actors = [Idle.remote() for _ in range(3)]  # type: ignore[attr-defined]
    ray.get([a.ping.remote() for a in actors])
    started = time.perf_counter() - t0
    time.sleep(1.0)
    mine = [p for p in children(os.getpid()) if p not in before]
    total = sum(rss_bytes(p) for p in mine)
    ray.shutdown()
    return {"n": 1, "start_s": started, "cluster_mib": total / MIB, "processes": len(mine)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    res.guarded("ours", ours)
    if not args.no_ray:
        res.guarded("ray", ray_idle)


if __name__ == "__main__":
    main()
