"""Pipelined throughput: runs/s of the 1 KiB identity chain with 1, 4, 16 and 64 runs in
flight from one client (Client.submit, a window refilled as runs finish), in the default
secure mode and in plain text. It should rise until a worker's CPU saturates.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

import numpy as np

from interop_runtime import ClusterSpec, Graph, LocalCluster
from interop_runtime.client.testing import numpy_worker

from .common import ResultFile, sigterm_raises


def chain() -> Graph:
    g = Graph("pipe").node("a", "w1", "identity").node("b", "w2", "identity")
    return g.edge("a.y", "b.x").input("x", "a.x").output("out", "b.y")


def throughput(client: Any, window: int, seconds: float) -> dict[str, float]:
    x = np.zeros(256, np.float32)
    inflight: deque[Future[Any]] = deque()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        while len(inflight) < window:
            inflight.append(client.submit("pipe", {"x": x}, timeout_s=30))
        inflight.popleft().result(timeout=30)
        done += 1
    while inflight:
        inflight.popleft().result(timeout=30)
        done += 1
    return {"n": done, "runs_per_s": done / (time.perf_counter() - t0)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--windows", default="1,4,16,64")
    args = ap.parse_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    for mode, curve in (("curve", True), ("tcp", False)):
        spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 1.0, "curve": curve},
                                           "workers": [numpy_worker("w1", "identity"),
                                                       numpy_worker("w2", "identity")]})
        with tempfile.TemporaryDirectory() as tmp, \
                LocalCluster(spec, log_dir=os.path.join(tmp, "logs")) as lc, \
                lc.client(timeout_s=30) as c:
            c.register(chain())
            throughput(c, 4, 0.5)  # warm-up
            for w in (int(s) for s in args.windows.split(",")):
                res.guarded(f"{mode}.window_{w}",
                            lambda w=w: throughput(c, w, args.seconds))  # type: ignore[misc]


if __name__ == "__main__":
    main()
