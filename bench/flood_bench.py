"""Memory under floods: a client that never reads its replies, then leaves.

    python -m bench.flood_bench [--queries 20000] [--runs 2000] [--kib 16]

A raw DEALER with the cluster's client key sends QUERY status and RUNs of a 16 KiB identity
chain as fast as it can and reads nothing, so every reply queues in the coordinator; then
it closes. Prints the coordinator's RSS before, at the peak, and a few seconds after the
client left, and checks that the cluster still serves. The bound it shows is the one
protocol/SPEC.md section 13.4 states: at most 1,000 queued messages per peer, at most
1,000 runs in flight per connection.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from interop_runtime import ClusterSpec, Graph, LocalCluster
from interop_runtime.client.testing import dial, numpy_worker
from interop_runtime.wire.codec import encode, new_id
from interop_runtime.wire.messages import PROTOCOL_VERSION, QueryMsg, RunMsg

from .common import rss_bytes


def rss_mib(pid: int) -> float:
    return rss_bytes(pid) / (1 << 20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flood_bench", description=__doc__)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=2_000)
    ap.add_argument("--kib", type=int, default=16)
    args = ap.parse_args(argv)
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 1.0},
                                       "workers": [numpy_worker("w1", "identity"),
                                                   numpy_worker("w2", "identity")]})
    with LocalCluster(spec) as lc:
        g = Graph("flood").node("a", "w1", "identity").node("b", "w2", "identity")
        g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")
        with lc.client() as c:
            c.register(g)
        assert lc.coordinator is not None
        pid = lc.coordinator.pid
        before = rss_mib(pid)
        sock = dial(lc)
        x = np.zeros(args.kib * 256, np.float32)
        hdr = {"v": PROTOCOL_VERSION, "src": "flood"}
        for i in range(max(args.queries, args.runs)):
            if i < args.queries:
                sock.send_multipart(encode(QueryMsg(**hdr, id=new_id(), what="status")))
            if i < args.runs:
                sock.send_multipart(encode(RunMsg(**hdr, id=new_id(), graph="flood",
                                                  run=new_id()), {"x": x}))
        peak = before
        for _ in range(30):  # let the coordinator work through what it got
            time.sleep(0.2)
            peak = max(peak, rss_mib(pid))
        sock.close(0)
        time.sleep(7)  # the coordinator hands freed memory back every 5 s
        after = rss_mib(pid)
        with lc.client(timeout_s=10) as c:
            ok = c.run("flood", {"x": x})["y"].shape == x.shape
    print(f"coordinator RSS: before {before:.0f} MiB, peak {peak:.0f} MiB, "
          f"{after:.0f} MiB after the client left; "
          f"{args.queries} unread QUERY status + {args.runs} unread RUNs of {args.kib} KiB; "
          f"serves afterwards: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
