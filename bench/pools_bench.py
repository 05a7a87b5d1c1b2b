"""Replica pools: throughput of a CPU-bound torch MLP on 1, 2 and 4 replicas of one pool,
under 32 concurrent clients (closed loop, 16 rows per request, no batching).

Each replica is its own worker process with one torch thread, so the figure scales with
replicas until the machine's CPUs are used up: on a 2-CPU machine, beyond 2 replicas the
clients, the coordinator and the replicas share the same two CPUs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from typing import Any

import numpy as np

from interop_runtime import Graph

from .common import ResultFile, sigterm_raises
from .serving_bench import mlp, run_scenario


def pool_graph(function: str, model_input: str, model_output: str) -> Graph:
    g = Graph("pooled").pool_node("n", "clf", function)
    return g.input("x", f"n.{model_input}").output("y", f"n.{model_output}")


def report_lines(results: dict[str, Any]) -> list[str]:
    """The section's Markdown table for bench/report.py."""
    rows = [(k, v) for k, v in sorted(results.items())
            if k.startswith("replicas_") and isinstance(v, dict)]
    points = [(k.split(".")[0], v) for k, v in rows if "runs_per_s" in v]
    if not points:
        return []
    cfg = results.get("config", {})
    base = points[0][1]["runs_per_s"] or 1.0
    out = [f"\n### Replica pools: torch MLP {cfg.get('mlp', {})}, {cfg.get('rows')} rows per "
           f"request, {cfg.get('clients')} clients, {cfg.get('seconds')} s per point, "
           f"{cfg.get('cpus')} CPUs\n",
           "| replicas | runs/s | x 1 replica | p50 ms | p99 ms | errors |",
           "|---:|---:|---:|---:|---:|---:|"]
    for key, v in points:
        out.append(f"| {key.removeprefix('replicas_')} | {v['runs_per_s']:.1f} | "
                   f"{v['runs_per_s'] / base:.2f} | {v.get('p50_ms', float('nan')):.2f} | "
                   f"{v.get('p99_ms', float('nan')):.2f} | {v['errors']} |")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="1 s per point")
    ap.add_argument("--replicas", default="1,2,4")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rows", type=int, default=16, help="rows per request")
    ap.add_argument("--seconds", type=float, help="per point (default 3; --quick 1)")
    args = ap.parse_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    # CPU-bound: 16 rows of a 2048-4096-10 MLP are ~135 M multiply-adds, some 10 ms of one
    # core, so the model's compute (not the runtime's overhead) is what replicas share out
    model = mlp(2048, 4096)
    rows = args.rows
    model = replace(model, request=lambda k: np.random.default_rng(k).standard_normal(
        (rows, 2048)).astype(np.float32))
    res.put("config", {"seconds": seconds, "clients": args.clients, "rows": rows,
                       "mlp": model.config["kwargs"], "cpus": os.cpu_count()})
    graph = pool_graph(model.function, model.input, model.output)
    for n in (int(r) for r in args.replicas.split(",")):
        workers = [{"name": "clf", "plugin": model.plugin, "config": model.config,
                    "replicas": n}]
        key = f"replicas_{n}"
        res.guarded(key, lambda k=key, w=workers: run_scenario(  # type: ignore[misc]
            res, k, w, graph, model, [args.clients], seconds, 0.3 if args.quick else 1.0))


if __name__ == "__main__":
    main()
