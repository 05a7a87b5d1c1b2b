"""Our runtime, end to end on real processes: a LocalCluster with two NumPy workers.

Graphs (both nodes run ``numpy_ops.identity``, which returns its input without a copy):
  chain: a direct run (SPEC section 16): client -> w1.identity -> w2.identity -> client,
         3 hops carry the tensor; the client's small RUN and the workers' DONEs go to the
         coordinator off that path. Through the coordinator (``viacoord``): 5 hops.
  one:   client -> w1.identity -> client: 2 hops (through the coordinator: 4).
  call:  Client.call('w1', 'identity'): CONTROL invoke forwarded by the coordinator, 4 hops.
Latency is ``Client.run`` wall time in the calling thread. Throughput (64 MiB) is measured
three times: as ``Client.run`` returns by default, with every shared-memory output copied
out of the worker's segment; with ``copy=False`` (``_zerocopy``): read-only views of it;
and with the input in a ``Client.shared_array`` as well (``_shared``): no copy at either end.

Transports: ``tcp`` (everything on tcp://127.0.0.1, same-host shared memory for tensors of
64 KiB and more), ``ipc`` (ipc:// sockets), ``curve`` (tcp with the default secure set-up),
``noshm`` (tcp, workers with --no-shm: frames only, what peers on other hosts get),
``curvenoshm`` (the same under CURVE: what encryption costs between hosts) and
``viacoord`` (tcp, ``Client(direct=False)``: every tensor through the coordinator, the
path before direct runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from interop_runtime import ClusterSpec, Graph, LocalCluster
from interop_runtime.client.cluster import CoordinatorSpec
from interop_runtime.client.testing import numpy_worker

from .common import (
    MIB,
    ResultFile,
    malloc_env,
    sched_delta,
    schedstat,
    section_parser,
    sigterm_raises,
    summarize_ns,
    summarize_transfer,
)

HOPS = {"chain": 3, "one": 2, "call": 4}
HOPS_VIA_COORDINATOR = {"chain": 5, "one": 4, "call": 4}


class BenchCluster(LocalCluster):
    """The cluster the runtime sections measure (the profile section swaps its launcher)."""


def chain_graph() -> Graph:
    g = Graph("bench-chain")
    g.node("a", "w1", "identity").node("b", "w2", "identity")
    g.edge("a.y", "b.x").input("x", "a.x").output("out", "b.y")
    return g


def one_graph() -> Graph:
    g = Graph("bench-one")
    g.node("a", "w1", "identity").input("x", "a.x").output("out", "a.y")
    return g


def start(transport: str, tmp: str) -> BenchCluster:
    """tcp: everything on tcp://127.0.0.1; ipc: everything on ipc://, both plain text
    (--insecure); curve: tcp with the default secure set-up (ephemeral CURVE keys, roles)."""
    coordinator: dict[str, Any] = {"heartbeat_s": 1.0, "curve": False}
    worker_bind: str | None = None
    shm = transport not in ("noshm", "curvenoshm")
    if transport in ("noshm", "viacoord"):
        pass  # tcp; noshm: frames only; viacoord: the client goes through the coordinator
    elif transport == "curvenoshm":  # what CURVE costs between hosts: every byte encrypted
        coordinator["curve"] = True
    elif transport == "ipc":
        coordinator["bind"] = f"ipc://{tmp}/coord.sock"
        worker_bind = "ipc"  # a socket file per worker in the cluster's log dir
    elif transport == "curve":
        if "curve" not in CoordinatorSpec.model_fields:
            raise RuntimeError("this interop_runtime has no CoordinatorSpec.curve")
        coordinator["curve"] = True
    elif transport != "tcp":
        raise ValueError(f"unknown transport {transport!r} (tcp, ipc, curve, noshm, "
                         f"curvenoshm, viacoord)")
    spec = ClusterSpec.model_validate({
        "coordinator": coordinator,
        "workers": [{**numpy_worker(w, "identity"), "bind": worker_bind, "shm": shm}
                    for w in ("w1", "w2")]})
    cluster = BenchCluster(spec, log_dir=os.path.join(tmp, "logs"), ready_timeout_s=60)
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        raise


def hops(client: Any, what: str) -> int:
    return (HOPS if client.direct else HOPS_VIA_COORDINATOR)[what]


def latency(client: Any, what: str, x: np.ndarray, iters: int, warmup: int,
            procs: dict[int, str]) -> dict[str, Any]:
    graph = {"chain": "bench-chain", "one": "bench-one"}.get(what)
    e2e: list[int] = []
    coord: list[int] = []
    done: dict[str, list[int]] = {"a": [], "b": []}
    pc = time.perf_counter_ns
    before: dict[int, tuple[int, int, int]] = {}
    for i in range(warmup + iters):
        if i == warmup:
            before = schedstat(procs)
        t0 = pc()
        if graph:
            r = client.run(graph, {"x": x}, timeout_s=10)
        else:
            r = client.call("w1", "identity", {"x": x}, timeout_s=10)
        t1 = pc()
        if i < warmup:
            continue
        e2e.append(t1 - t0)
        if graph:
            coord.append(r.elapsed_us * 1000)
            for node, t in r.timings.items():
                done[node].append(t["done_us"] * 1000)
    after = schedstat(procs)
    out: dict[str, Any] = {**summarize_ns(e2e), "hops": hops(client, what),
                           "per_run_sched": sched_delta(before, after, procs, iters)}
    if coord:
        # where the time went, from the coordinator's own clock (medians, microseconds):
        # elapsed = RUN handled -> last DONE handled; done_<node> = RUN handled -> that DONE
        out["coordinator_elapsed_median_us"] = float(np.median(coord)) / 1e3
        out["outside_coordinator_median_us"] = out["median_us"] - out[
            "coordinator_elapsed_median_us"]
        for node, vals in done.items():
            if vals:
                out[f"done_{node}_median_us"] = float(np.median(vals)) / 1e3
    return out


def throughput(client: Any, what: str, big: np.ndarray, iters: int, copy: bool = True,
               shared: bool = False) -> dict[str, Any]:
    graph = {"chain": "bench-chain", "one": "bench-one"}[what]
    if shared:
        buf = client.shared_array(big.shape, big.dtype)
        buf[:] = big
        big = buf
    r = client.run(graph, {"x": big}, timeout_s=120, copy=copy)  # warm-up; check the bytes
    assert np.array_equal(r["out"], big), "64 MiB output differs from its input"
    del r
    client.run(graph, {"x": big}, timeout_s=120, copy=copy)
    times, coord = [], []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        r = client.run(graph, {"x": big}, timeout_s=120, copy=copy)
        times.append(time.perf_counter_ns() - t0)
        coord.append(r.elapsed_us / 1e3)
        del r  # free the received frame before the next run, as a consumer would
    return {**summarize_transfer(times, big.nbytes, hops(client, what)),
            "coordinator_elapsed_median_ms": float(np.median(coord))}


def measure(res: ResultFile, transport: str, args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="ibr-", dir="/tmp")
    t0 = time.monotonic()
    cluster = None
    try:
        cluster = start(transport, tmp)
        res.put(f"{transport}.startup_s", time.monotonic() - t0)
        with cluster.client(timeout_s=30, direct=transport != "viacoord") as c:
            endpoints = {w["name"]: w["endpoint"] for w in c.workers()}
            res.put(f"{transport}.endpoints", {"coordinator": cluster.address, **endpoints})
            c.register(chain_graph())
            c.register(one_graph())
            procs = {os.getpid(): "client"}
            if cluster.coordinator is not None:
                procs[cluster.coordinator.pid] = "coordinator"
            procs.update({p.pid: name for name, p in cluster.workers.items()})
            small = np.arange(args.small_bytes // 4, dtype=np.float32)
            assert np.array_equal(c.run("bench-chain", {"x": small})["out"], small)
            if args.latency:
                for what in ("chain", "one", "call"):
                    res.guarded(f"{transport}.lat_{what}_1k", lambda w=what: latency(
                        c, w, small, args.iters, args.warmup, procs))
            if args.throughput:
                big = np.arange(args.size_mib * MIB // 4, dtype=np.float32)
                for what in ("chain", "one"):
                    res.guarded(f"{transport}.tput_{what}_64m", lambda w=what: throughput(
                        c, w, big, args.tput_iters))
                    res.guarded(f"{transport}.tput_{what}_64m_zerocopy",
                                lambda w=what: throughput(c, w, big, args.tput_iters,
                                                          copy=False))
                    if hasattr(c, "shared_array"):
                        res.guarded(f"{transport}.tput_{what}_64m_shared",
                                    lambda w=what: throughput(c, w, big, args.tput_iters,
                                                              copy=False, shared=True))
    finally:
        if cluster is not None:
            t1 = time.monotonic()
            cluster.stop()
            res.put(f"{transport}.stop_s", time.monotonic() - t1)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = section_parser()
    ap.add_argument("--no-throughput", dest="throughput", action="store_false")
    ap.add_argument("--client-frees-memory", dest="client_keeps_memory", action="store_false",
                    help="leave the client process's malloc alone (by default it calls "
                         "interop_runtime.keep_freed_memory(), as the README advises a "
                         "process that moves large tensors to)")
    args = ap.parse_args(argv)
    if args.client_keeps_memory:  # before any zmq context starts its threads
        from interop_runtime.transport.memory import keep_freed_memory
        keep_freed_memory()
    sigterm_raises()
    res = ResultFile(args.out)
    res.data["malloc_env"] = malloc_env()
    for transport in args.transports.split(","):
        try:
            measure(res, transport, args)
        except Exception as exc:
            res.error(transport, exc)


if __name__ == "__main__":
    main()
