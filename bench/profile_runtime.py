"""Where the coordinator's and workers' CPU goes during 1 KiB chain runs (opt-in section).

Starts the same tcp cluster as runtime_bench with each daemon under bench.cpu_profile
(cProfile on a CPU-time clock), runs the chain graph N times, stops the cluster, and
reports per process: CPU per run of the main thread, and the functions with the most own
CPU time (microseconds per run), profiled only during the timed runs. Profiling slows
everything down; read the shares, not the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import tempfile
import time
from typing import Any

import numpy as np

from .common import ResultFile, sigterm_raises
from .runtime_bench import BenchCluster, chain_graph


class ProfiledCluster(BenchCluster):
    def __init__(self, *args: Any, prof_dir: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.prof_dir = prof_dir

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> Any:
        i = args.index("-m")  # [python, -m, interop_runtime, ...]
        args = [*args[:i], "-m", "bench.cpu_profile", os.path.join(self.prof_dir,
                                                                   f"{log_name}.prof"),
                *args[i + 1:]]
        return super()._spawn(args, log_name, env)


def summarize(path: str, runs: int, top: int) -> dict[str, Any]:
    st = pstats.Stats(path)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    stats: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in stats.items():
        rows.append((tt, ct, nc, f"{os.path.basename(file)}:{line}({fn})"))
    rows.sort(reverse=True)
    return {"main_thread_cpu_us_per_run": total / runs * 1e6,
            "top_own_time": [{"fn": name, "own_us_per_run": tt / runs * 1e6,
                              "cum_us_per_run": ct / runs * 1e6, "calls_per_run": nc / runs}
                             for tt, ct, nc, name in rows[:top]]}


def main(argv: list[str] | None = None) -> None:
    from interop_runtime import ClusterSpec
    from interop_runtime.client.testing import numpy_worker

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--small-bytes", type=int, default=1024)
    args, _ = ap.parse_known_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    tmp = tempfile.mkdtemp(prefix="ibp-", dir="/tmp")
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 1.0},
        "workers": [numpy_worker("w1", "identity"), numpy_worker("w2", "identity")]})
    cluster = ProfiledCluster(spec, prof_dir=tmp, log_dir=os.path.join(tmp, "logs"),
                              ready_timeout_s=60)
    try:
        cluster.start()
        procs = {"coordinator": cluster.coordinator, **cluster.workers}
        with cluster.client(timeout_s=30) as c:
            c.register(chain_graph())
            x = np.arange(args.small_bytes // 4, dtype=np.float32)
            for _ in range(args.warmup):
                c.run("bench-chain", {"x": x}, timeout_s=10)
            for p in procs.values():
                p.send_signal(signal.SIGUSR1)
            time.sleep(0.2)  # let each daemon's main thread run the handler
            t0 = time.perf_counter()
            for _ in range(args.iters):
                c.run("bench-chain", {"x": x}, timeout_s=10)
            res.put("profiled_run_us", (time.perf_counter() - t0) / args.iters * 1e6)
            for p in procs.values():
                p.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 15
        paths = {n: os.path.join(tmp, f"{n}.prof") for n in procs}
        while time.monotonic() < deadline and not all(os.path.exists(p) for p in paths.values()):
            time.sleep(0.1)
        time.sleep(0.3)  # dump_stats may still be writing
        for name, path in paths.items():
            res.guarded(name, lambda p=path: summarize(p, args.iters, args.top))
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
