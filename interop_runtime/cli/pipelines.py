"""`interop run`, `up` and `launch`: pipelines on a running coordinator or a local cluster."""

# no `from __future__ import annotations`: typer reads the option types at runtime
import signal
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
    fail,
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
                      "act as any client or worker", soft_wrap=True)
    return spec


LogDirOpt = Annotated[Path | None, typer.Option(
    help="Where logs, keys and cluster.json go (default: a kept folder under "
         "$XDG_STATE_HOME/interop/CLUSTER/).")]


def _load(load: Any, path: Path) -> Any:
    """A config file, or its problem as one line (file and key) and exit 1."""
    from interop_runtime.cli.errors import report

    try:
        return load(path)
    except ValueError as exc:  # ConfigError and pydantic's errors are ValueErrors
        report(exc)


def _stop_on_sigterm() -> None:
    def _stop(*_: object) -> None:  # SIGTERM stops the cluster like Ctrl-C does
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)


def up(cluster: Annotated[Path, typer.Argument(help="Cluster YAML.")],
       log_dir: LogDirOpt = None,
       insecure: LocalInsecureOpt = False) -> None:
    """Start a local coordinator and the workers of a cluster YAML; Ctrl-C stops them.

    The cluster gets fresh CURVE keys (in its state folder); the lines printed once it is up
    tell a client how to connect, like a notebook server's token. A worker that exits is
    reported (and restarted if the file's `supervise` says so); exit 1 if the coordinator
    exits."""
    from interop_runtime.cli.localrun import local_cluster
    from interop_runtime.cli.progress import summary
    from interop_runtime.client.scaling import serve_scale_requests

    _stop_on_sigterm()
    spec = _load(lambda p: _cluster_spec(p, insecure), cluster)
    try:
        with local_cluster(cluster, spec, log_dir) as session:
            summary(console, session.cluster, session.folder)
            console.print("[green]ready[/green]; Ctrl-C stops the cluster")
            view = session.view
            while not view.coordinator_died.wait(0.5):
                if serve_scale_requests(session.cluster):  # `interop scale` from elsewhere
                    session.save()
                if view.changed.is_set():
                    view.changed.clear()
                    session.save()
            session.save(state="failed", error=view.death)
    except KeyboardInterrupt:
        console.print("stopping")
        return
    fail(f"{view.death}; stopped the workers")


def launch(cluster: Annotated[Path, typer.Argument(help="Cluster YAML.")],
           pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
           timeout: Annotated[float, typer.Option(help="Per-run deadline (s).")] = 300.0,
           log_dir: LogDirOpt = None,
           insecure: LocalInsecureOpt = False) -> None:
    """Start a local cluster (fresh CURVE keys), run one pipeline on it, print the results,
    stop."""
    from interop_runtime.cli.errors import report
    from interop_runtime.cli.localrun import local_cluster
    from interop_runtime.graph.pipeline import PipelineSpec, make_inputs
    from interop_runtime.wire.errors import InteropError

    _stop_on_sigterm()
    spec = _load(PipelineSpec.from_yaml, pipeline)
    inputs = _load(lambda p: make_inputs(spec, p.parent), pipeline)
    cluster_spec = _load(lambda p: _cluster_spec(p, insecure), cluster)
    try:
        with local_cluster(cluster, cluster_spec, log_dir) as session, \
                session.cluster.client(timeout_s=timeout) as c:
            c.register(spec.graph)
            for _ in range(spec.repeat):
                result = c.run(spec.graph.name, inputs, timeout_s=timeout)
            print_result(result)
    except InteropError as exc:  # a graph the workers cannot run, a run that failed
        report(exc)
    except KeyboardInterrupt:
        console.print("stopped")
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("run")(run_pipeline)
    app.command()(up)
    app.command()(launch)
