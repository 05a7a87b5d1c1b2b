"""Soak: many concurrent clients through a graph spanning 3 workers, on loopback.

CI runs a short version; the full one is on demand:
    INTEROP_SOAK_RUNS=10000 ./run test tests/test_soak.py -s
No result may be lost or duplicated; p50 and p99 latency are printed.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from interop_runtime import Graph
from interop_runtime.client.testing import numpy_worker

RUNS = int(os.environ.get("INTEROP_SOAK_RUNS", "640"))
CLIENTS = int(os.environ.get("INTEROP_SOAK_CLIENTS", "32"))
WALL_LIMIT_S = float(os.environ.get("INTEROP_SOAK_WALL_S", "900"))


def test_soak_no_result_lost_or_duplicated(start_cluster) -> None:
    cluster = start_cluster(numpy_worker("s1", "scale"), numpy_worker("s2", "add_const"),
                            numpy_worker("s3", "add"))
    g = Graph("soak").node("a", "s1", "scale", factor=2.0).node("b", "s2", "add_const", value=1.0)
    g.node("c", "s3", "add").edge("a.y", "b.x").edge("a.y", "c.a").edge("b.y", "c.b")
    g.input("x", "a.x").output("y", "c.y")  # y = 2x + (2x + 1) = 4x + 1
    with cluster.client() as c:
        c.register(g)
    counts = [RUNS // CLIENTS + (k < RUNS % CLIENTS) for k in range(CLIENTS)]
    starts = [sum(counts[:k]) for k in range(CLIENTS)]
    seen: dict[int, int] = {}
    wrong: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + WALL_LIMIT_S

    def one_client(k: int) -> None:
        with cluster.client(timeout_s=60) as c:
            for i in range(counts[k]):
                if time.monotonic() > deadline:
                    return
                tag = starts[k] + i
                t0 = time.perf_counter()
                y = c.run("soak", {"x": np.full(4, tag, np.float32)})["y"]
                dt = time.perf_counter() - t0
                got = int(round((float(y[0]) - 1) / 4))
                with lock:
                    latencies.append(dt)
                    seen[got] = seen.get(got, 0) + 1
                    if not np.all(y == np.float32(4 * tag + 1)):
                        wrong.append(tag)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one_client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WALL_LIMIT_S + 60)
    wall = time.perf_counter() - t0
    total = RUNS
    lat = np.sort(np.array(latencies)) * 1e3
    print(f"\nsoak: {len(latencies)} runs, {CLIENTS} clients, {wall:.1f} s, "
          f"{len(latencies) / wall:.0f} runs/s, p50 {np.percentile(lat, 50):.2f} ms, "
          f"p99 {np.percentile(lat, 99):.2f} ms, max {lat[-1]:.2f} ms")
    assert not wrong
    assert sorted(seen) == list(range(total)), "a result was lost"
    assert set(seen.values()) == {1}, "a result was duplicated"
    with cluster.client() as c:
        status = c.status()
    assert status["runs_ok"] == total and status["runs_failed"] == 0 and status["runs_active"] == 0
