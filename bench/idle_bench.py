"""Idle cost and start-up: what a cluster costs before it does any work.

ours:  a LocalCluster with the coordinator and 3 NumPy workers, in the default secure mode;
       start = LocalCluster.start() until every worker is registered; memory of each process
       a second later.
ray:   ray.init() with 3 idle actors; start = init until the actors answer; memory summed
       over every process Ray started (raylet, GCS, workers...), a second later.
floor: one bare Python process that imports the libraries a NumPy worker needs (zmq,
       msgpack, msgspec with one struct built, numpy, ml_dtypes): what no lazy import can
       save. The coordinator needs no numpy.

Each process is measured the same way on both sides, from /proc/PID/smaps_rollup:
  RSS  resident pages, shared library pages counted in full in every process (the goal's
       measure: issue 10 goal 6 compares RSS sums);
  PSS  resident pages with each shared page split between the processes that map it: what
       the machine pays in all, so sums of PSS add up;
  USS  pages only this process holds: what stopping it would give back.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interop_runtime import ClusterSpec, LocalCluster
from interop_runtime.client.testing import numpy_worker

from .common import ResultFile, sigterm_raises

MIB = 1 << 20
FLOOR = ("import sys, zmq, msgpack, msgspec, numpy, ml_dtypes\n"
         "class M(msgspec.Struct):\n    x: int\n"
         "print('ready', flush=True); sys.stdin.read()")


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of one process in MiB (zeros once it is gone)."""
    out = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return out
    kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines)}
    out["rss"], out["pss"] = kib.get("Rss", 0) / 1024, kib.get("Pss", 0) / 1024
    out["uss"] = (kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)) / 1024
    return out


def total(pids: list[int]) -> dict[str, float]:
    each = [memory(p) for p in pids]
    return {k: sum(m[k] for m in each) for k in ("rss", "pss", "uss")}


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
            coordinator = memory(cluster.coordinator.pid)
            workers = [memory(p.pid) for p in cluster.workers.values()]
        finally:
            cluster.stop()
    res = {"n": 1, "start_s": started}
    for k in ("rss", "pss", "uss"):  # *_mib without a prefix: RSS, as the goal and older runs
        name = "" if k == "rss" else f"_{k}"
        res[f"coordinator{name}_mib"] = coordinator[k]
        res[f"worker{name}_mib"] = sum(w[k] for w in workers) / len(workers)
        res[f"coordinator_plus_one_worker{name}_mib"] = coordinator[k] + workers[0][k]
        res[f"cluster{name}_mib"] = coordinator[k] + sum(w[k] for w in workers)
    return res


def floor() -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-c", FLOOR], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # type: ignore[union-attr]
        mem = memory(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return {"n": 1, **{f"{k}_mib": v for k, v in mem.items()}}


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
    mem = total(mine)
    ray.shutdown()
    return {"n": 1, "start_s": started, "cluster_mib": mem["rss"],
            "cluster_pss_mib": mem["pss"], "cluster_uss_mib": mem["uss"],
            "processes": len(mine)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    res.guarded("ours", ours)
    res.guarded("floor", floor)
    if not args.no_ray:
        res.guarded("ray", ray_idle)


if __name__ == "__main__":
    main()
