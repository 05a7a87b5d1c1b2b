"""`interop run`, `up` and `launch`: pipelines on a running coordinator or a local cluster."""

# no `from __future__ import annotations`: typer reads the option types at runtime
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    client_session,
    console,
)


def print_result(result: Any, *, max_values: int = 6) -> None:
    table = Table("output", "dtype", "shape", "values")
    for name, arr in result.items():
        flat = np.asarray(arr).reshape(-1)[:max_values]
        table.add_row(name, str(arr.dtype), str(tuple(arr.shape)),
                      " ".join(f"{v:.4g}" if np.issubdtype(flat.dtype, np.floating) else str(v)
                               for v in flat) + (" ..." if arr.size > max_values else ""))
    console.print(table)
    timing = Table("node", "worker", "compute ms", "wait ms", "done at ms", "bytes out")
    for node, t in result.timings.items():
        timing.add_row(node, t["worker"], f"{t['compute_us'] / 1000:.3f}",
                       f"{t['wait_us'] / 1000:.3f}", f"{t['done_us'] / 1000:.3f}",
                       str(t["bytes_out"]))
    console.print(timing)
    console.print(f"run {result.run}: {result.elapsed_us / 1000:.3f} ms end to end")


def run_pipeline(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (graph + inputs).")],
    coordinator: CoordOpt = DEFAULT_ADDRESS,
    timeout: Annotated[float, typer.Option(help="Per-run deadline (s).")] = 60.0,
    save: Annotated[Path | None, typer.Option(help="Save outputs to this .npz file.")] = None,
    key: KeyOpt = None,
    coordinator_key: CoordKeyOpt = None,
) -> None:
    """Register a pipeline's graph and run it on a running coordinator."""
    from interop_runtime.graph.pipeline import PipelineSpec, make_inputs

    spec = PipelineSpec.from_yaml(pipeline)
    inputs = make_inputs(spec, pipeline.parent)
    with client_session(coordinator, key, coordinator_key, timeout) as c:
        c.register(spec.graph)
        for _ in range(spec.repeat):
            result = c.run(spec.graph.name, inputs, timeout_s=timeout)
    print_result(result)
    if save:
        np.savez(save, **result)


LocalInsecureOpt = Annotated[bool, typer.Option(
    "--insecure", help="No CURVE keys: plain text on loopback, trusting every local process.")]


def _cluster_spec(path: Path, insecure: bool) -> Any:
    from interop_runtime.client.cluster import ClusterSpec

    spec = ClusterSpec.from_yaml(path)
    if insecure:
        spec.coordinator.curve = False
    if not spec.coordinator.curve:
        console.print("[yellow]insecure:[/yellow] no CURVE keys; every process on this host may "
                      "act as any client or worker")
    return spec


def up(cluster: Annotated[Path, typer.Argument(help="Cluster YAML.")],
       log_dir: Annotated[Path | None, typer.Option(help="Where worker logs go.")] = None,
       insecure: LocalInsecureOpt = False) -> None:
    """Start a local coordinator and the workers of a cluster YAML; Ctrl-C stops them.

    The cluster gets fresh CURVE keys (in the log dir); the lines printed at start tell a
    client how to connect, like a notebook server's token."""
    from interop_runtime.client.cluster import LocalCluster

    def _stop(*_: object) -> None:  # SIGTERM stops the cluster like Ctrl-C does
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)
    spec = _cluster_spec(cluster, insecure)
    with LocalCluster(spec, log_dir=str(log_dir) if log_dir else None) as lc:
        console.print(f"coordinator at [bold]{lc.address}[/bold]; workers: "
                      f"{', '.join(lc.workers)}; logs in {lc.log_dir}")
        console.print("connect with:", soft_wrap=True)
        for name, value in lc.connection().items():
            console.print(f"  export {name}={value}", soft_wrap=True, highlight=False)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping")


def launch(cluster: Annotated[Path, typer.Argument(help="Cluster YAML.")],
           pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
           timeout: Annotated[float, typer.Option(help="Per-run deadline (s).")] = 300.0,
           insecure: LocalInsecureOpt = False) -> None:
    """Start a local cluster (fresh CURVE keys), run one pipeline on it, print the results,
    stop."""
    from interop_runtime.client.cluster import LocalCluster
    from interop_runtime.graph.pipeline import PipelineSpec, make_inputs

    spec = PipelineSpec.from_yaml(pipeline)
    cluster_spec = _cluster_spec(cluster, insecure)
    with LocalCluster(cluster_spec) as lc, lc.client(timeout_s=timeout) as c:
        console.print(f"coordinator at {lc.address}; workers: {', '.join(lc.workers)}")
        c.register(spec.graph)
        inputs = make_inputs(spec, pipeline.parent)
        for _ in range(spec.repeat):
            result = c.run(spec.graph.name, inputs, timeout_s=timeout)
        print_result(result)


def register(app: typer.Typer) -> None:
    app.command("run")(run_pipeline)
    app.command()(up)
    app.command()(launch)
