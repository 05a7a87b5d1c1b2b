"""Coordinator cost as the cluster grows: its state machine, in process, without sockets.

For 10, 100 and 1,000 registered workers (idle but heartbeating) and chain graphs of 10,
100 and 1,000 nodes spread over them, drive runs through ``CoordinatorState``: a RUN, then
each node's DONE from the connection of its worker, in order. Reports the coordinator's
CPU per run and per node, and the memory its tables hold (tracemalloc). The cost should be
linear in the work (nodes) and flat in idle workers. Socket I/O is not in these figures:
the runtime section measures whole runs.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any

import numpy as np

from interop_runtime import Graph
from interop_runtime.coordinator.state.base import Limits
from interop_runtime.coordinator.state.machine import CoordinatorState
from interop_runtime.wire.codec import Envelope
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DoneMsg,
    FunctionSpec,
    GraphMsg,
    HeartbeatMsg,
    RegisterMsg,
    ReplyMsg,
    RunMsg,
    TensorSpec,
)

from .common import ResultFile, sigterm_raises

V = PROTOCOL_VERSION
F = FunctionSpec(name="identity", inputs=[TensorSpec(name="x", dtype="float32")],
                 outputs=[TensorSpec(name="y", dtype="float32")])


def state_with(workers: int, nodes: int) -> tuple[CoordinatorState, dict[str, bytes], Graph]:
    st = CoordinatorState(limits=Limits(max_workers=workers + 10))
    ids: dict[str, bytes] = {}
    sessions: dict[str, str] = {}
    for i in range(workers):
        name = f"w{i}"
        ids[name] = name.encode()
        out = st.handle(ids[name], Envelope(RegisterMsg(
            v=V, id=f"r{i}", name=name, plugin="numpy", endpoint=f"tcp://h:{i}",
            functions=[F])), 0.0)
        sessions[name] = out[0].msg.body["session"]
    g = Graph(f"chain{nodes}")
    for n in range(nodes):
        g.node(f"n{n}", f"w{n % workers}", "identity")
        if n:
            g.edge(f"n{n - 1}.y", f"n{n}.x")
    g.input("x", "n0.x").output("y", f"n{nodes - 1}.y")
    sends = st.handle(b"client", Envelope(GraphMsg(v=V, id="g", op="register",
                                                   spec=g.spec().model_dump())), 0.0)
    for s in sends:  # the plan acks, from each worker's own connection
        if isinstance(s.msg, ControlMsg):
            st.handle(s.peer, Envelope(ReplyMsg(v=V, id="a" + s.msg.id, reply_to=s.msg.id)), 0.0)
    for name, ident in ids.items():
        st.handle(ident, Envelope(HeartbeatMsg(v=V, id="h", name=name,
                                               session=sessions[name])), 0.0)
    return st, ids, g


def run_many(st: CoordinatorState, ids: dict[str, bytes], g: Graph, nodes: int, runs: int,
             workers: int) -> dict[str, Any]:
    x = np.zeros(256, np.float32)
    y = np.zeros(256, np.float32)
    t0 = time.process_time()
    for r in range(runs):
        run = f"run{r}"
        st.handle(b"client", Envelope(RunMsg(v=V, id=f"m{r}", graph=g.name, run=run),
                                      {"x": x}), 1.0)
        for n in range(nodes):
            out = {"y": y} if n == nodes - 1 else {}
            st.handle(ids[f"w{n % workers}"], Envelope(
                DoneMsg(v=V, id=f"d{r}.{n}", graph=g.name, run=run, node=f"n{n}"), out), 1.0)
    cpu = time.process_time() - t0
    return {"n": runs, "cpu_us_per_run": cpu / runs * 1e6,
            "cpu_us_per_node": cpu / runs / nodes * 1e6}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", type=int, default=20_000, help="node completions per cell")
    args = ap.parse_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    for workers in (10, 100, 1000):
        for nodes in (10, 100, 1000):
            def cell(workers: int = workers, nodes: int = nodes) -> dict[str, Any]:
                tracemalloc.start()
                st, ids, g = state_with(workers, nodes)
                held = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
                out = run_many(st, ids, g, nodes, max(3, args.work // nodes), workers)
                return {**out, "tables_mib": held / (1 << 20)}
            res.guarded(f"workers_{workers}.nodes_{nodes}", cell)


if __name__ == "__main__":
    main()
