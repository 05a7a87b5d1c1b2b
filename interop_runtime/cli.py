"""The ``interop`` command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="interop-runtime: run models from different frameworks as one system.",
                  no_args_is_help=True, add_completion=False)
coordinator_app = typer.Typer(help="The coordinator daemon.", no_args_is_help=True)
worker_app = typer.Typer(help="Worker processes.", no_args_is_help=True)
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(worker_app, name="worker")
keys_app = typer.Typer(help="CURVE keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()

KeyOpt = Annotated[Path | None, typer.Option("--key", envvar="INTEROP_KEY",
                                             help="This process's CURVE secret key file "
                                                  "(NAME.key_secret); turns CURVE on.")]
AuthOpt = Annotated[Path | None, typer.Option("--authorized", envvar="INTEROP_AUTHORIZED",
                                              help="Directory of public keys allowed to connect.")]
CoordKeyOpt = Annotated[Path | None, typer.Option("--coordinator-key",
                                                  envvar="INTEROP_COORDINATOR_KEY",
                                                  help="The coordinator's public key file.")]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Allow plain text on a "
                                                               "non-loopback address.")]


def _security(key: Path | None, authorized: Path | None = None,
              coordinator_key: Path | None = None) -> Any:
    if key is None:
        return None
    from .security import Security

    return Security.from_files(key, authorized, coordinator_key)


@contextmanager
def client_session(coordinator: str, key: Path | None, coordinator_key: Path | None,
                   timeout: float) -> Iterator[Any]:
    """A client for a command; a failure prints one clean line and exits 1, no traceback."""
    from .errors import InteropError

    try:
        with _client(coordinator, key, coordinator_key, timeout) as c:
            yield c
    except (InteropError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None


def _client(coordinator: str, key: Path | None, coordinator_key: Path | None, timeout_s: float
            ) -> Any:
    from .client import Client

    return Client(coordinator, timeout_s=timeout_s, security=_security(key, None, coordinator_key))


@keys_app.command("generate")
def keys_generate(directory: Annotated[Path, typer.Argument(help="Where the keys go.")],
                  names: Annotated[list[str], typer.Argument(help="One key pair per name, e.g. "
                                                                  "coordinator worker1 client")],
                  authorize: Annotated[bool, typer.Option(help="Also copy the public keys into "
                                                               "DIRECTORY/authorized/.")] = True
                  ) -> None:
    """Create CURVE key pairs: NAME.key (public) and NAME.key_secret (keep it private)."""
    from .security import generate_keys

    for name in names:
        public, secret = generate_keys(directory, name, authorize=authorize)
        console.print(f"{name}: {public}  {secret}")

CoordOpt = Annotated[str, typer.Option("--coordinator", "-c", help="Coordinator address.",
                                       envvar="INTEROP_COORDINATOR")]
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"


LogFormatOpt = Annotated[str, typer.Option("--log-format", help="text or json (one object a line).")]


def _logging(level: str, fmt: str = "text", component: str | None = None) -> None:
    from .logs import setup_logging

    setup_logging(level, fmt, component)


@coordinator_app.command("start")
def coordinator_start(
    bind: Annotated[str, typer.Option(help="Address to bind (tcp://, ipc://).")] = DEFAULT_ADDRESS,
    state: Annotated[str, typer.Option(help="SQLite file for graphs, runs and results.")] =
        "interop-state.sqlite",
    heartbeat: Annotated[float, typer.Option(help="Expected worker heartbeat interval (s).")] = 1.0,
    dead_after: Annotated[float | None, typer.Option(help="Mark a worker dead after this many "
                                                          "seconds without heartbeat.")] = None,
    max_message_bytes: Annotated[int, typer.Option(help="Reject bigger messages.")] = 1 << 31,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    key: KeyOpt = None,
    authorized: AuthOpt = None,
    insecure: InsecureOpt = False,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this "
                                                          "port (0: any free port).")] = None,
    metrics_addr: Annotated[str, typer.Option(help="Address for the metrics server.")] =
        "127.0.0.1",
    log_format: LogFormatOpt = "text",
    max_runs: Annotated[int, typer.Option(help="Runs in flight at most; more get `busy`.")] =
        10_000,
    max_runs_per_client: Annotated[int, typer.Option(help="Runs in flight per connection.")] =
        1_000,
) -> None:
    """Run the coordinator in the foreground (SIGTERM stops it cleanly)."""
    from .coordinator import Coordinator

    _logging(log_level, log_format, "coordinator")
    try:
        coordinator = Coordinator(bind, state_path=state, heartbeat_s=heartbeat,
                                  dead_after_s=dead_after, max_message_bytes=max_message_bytes,
                                  security=_security(key, authorized), insecure=insecure,
                                  metrics_port=metrics_port, metrics_addr=metrics_addr,
                                  max_runs=max_runs, max_runs_per_client=max_runs_per_client)
    except ValueError as exc:
        console.print(f"[red]cannot start coordinator:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    coordinator.serve_forever()


@worker_app.command("start")
def worker_start(
    plugin: Annotated[str, typer.Option(help="Plugin name (see `interop plugins`).")],
    coordinator: CoordOpt = DEFAULT_ADDRESS,
    config: Annotated[Path | None, typer.Option(help="Plugin config, YAML.")] = None,
    name: Annotated[str | None, typer.Option(help="Worker name (default: plugin-pid).")] = None,
    bind: Annotated[str, typer.Option(help="Address for this worker's inbox.")] =
        "tcp://127.0.0.1:0",
    advertise: Annotated[str | None, typer.Option(
        help="Endpoint peers should dial (e.g. tcp://10.0.0.5:7000) when --bind is a wildcard "
             "such as tcp://0.0.0.0:7000.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    heartbeat: Annotated[float, typer.Option(help="Heartbeat interval (s).")] = 1.0,
    max_message_bytes: Annotated[int, typer.Option(help="Reject bigger messages.")] = 1 << 31,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    key: KeyOpt = None,
    authorized: AuthOpt = None,
    coordinator_key: CoordKeyOpt = None,
    insecure: InsecureOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Start a worker: load the model, register with the coordinator, serve."""
    import os

    from .plugin import PluginUnavailable, create_plugin
    from .security import check_bind_allowed
    from .worker import WorkerHost

    _logging(log_level, log_format, f"worker:{name or plugin}")
    security = _security(key, authorized, coordinator_key)
    try:
        check_bind_allowed(bind, security, insecure)
    except ValueError as exc:
        console.print(f"[red]cannot start worker:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    cfg: dict[str, Any] = yaml.safe_load(config.read_text()) if config else {}
    cfg = cfg or {}
    try:
        loaded = create_plugin(plugin, cfg, device)
    except PluginUnavailable as exc:
        console.print(f"[red]cannot start worker:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(3) from None
    except Exception as exc:  # a bad config or device: say so, do not trace back
        console.print(f"[red]cannot start worker:[/red] {type(exc).__name__}: "
                      f"{escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        host = WorkerHost(name or f"{plugin}-{os.getpid()}", loaded, plugin, coordinator,
                          bind=bind, device=device, heartbeat_s=heartbeat,
                          max_message_bytes=max_message_bytes, security=security,
                          reload=lambda: create_plugin(plugin, cfg, device), advertise=advertise)
    except ValueError as exc:
        console.print(f"[red]cannot start worker:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    host.serve_forever()


@app.command()
def plugins() -> None:
    """List installed worker plugins."""
    from .plugin import available_plugins

    table = Table("plugin", "entry point")
    for n, v in sorted(available_plugins().items()):
        table.add_row(n, v)
    console.print(table)


@app.command()
def workers(coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
            coordinator_key: CoordKeyOpt = None) -> None:
    """List the coordinator's workers and their functions."""
    with _client(coordinator, key, coordinator_key, 5) as c:
        rows = c.workers()
    table = Table("worker", "plugin", "device", "alive", "endpoint", "functions")
    for w in rows:
        table.add_row(w["name"], w["plugin"], w["device"], "yes" if w["alive"] else "[red]no[/red]",
                      w["endpoint"], ", ".join(f["name"] for f in w["functions"]))
    console.print(table)


def _status_view(c: Any) -> Any:
    from rich.console import Group

    body = c.status()
    workers = Table("worker", "plugin", "device", "alive", "last heartbeat", "functions",
                    title="workers")
    for w in c.workers():
        workers.add_row(w["name"], w["plugin"], w["device"],
                        "[green]yes[/green]" if w["alive"] else "[red]no[/red]",
                        f"{w['last_seen_s']:.1f}s ago", str(len(w["functions"])))
    runs = Table("run", "graph", "outstanding nodes", title="runs in flight")
    for r in c.runs()["active"][:20]:
        runs.add_row(r["run"], r["graph"], ", ".join(f"{n}@{w}" for n, w in r["outstanding"].items()))
    counters = " · ".join(f"{k}: {v}" for k, v in body.items())
    return Group(counters, workers, runs)


@app.command()
def status(coordinator: CoordOpt = DEFAULT_ADDRESS,
           json_out: Annotated[bool, typer.Option("--json", help="Counters as JSON.")] = False,
           watch: Annotated[bool, typer.Option("--watch", "-w", help="Live view.")] = False,
           key: KeyOpt = None, coordinator_key: CoordKeyOpt = None) -> None:
    """Workers, runs in flight and counters; --watch keeps the table live."""
    from rich.live import Live

    with _client(coordinator, key, coordinator_key, 5) as c:
        if json_out:
            print(json.dumps({**c.status(), "workers": c.workers()}))
        elif watch:
            with Live(_status_view(c), console=console, refresh_per_second=2) as live:
                try:
                    while True:
                        time.sleep(1)
                        live.update(_status_view(c))
                except KeyboardInterrupt:
                    pass
        else:
            console.print(_status_view(c))


@app.command()
def graph(pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (or a bare graph YAML).")],
          fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot.")] = "mermaid"
          ) -> None:
    """Render a pipeline's graph as Mermaid or Graphviz DOT."""
    from .graph import GraphSpec
    from .render import to_dot, to_mermaid

    raw = yaml.safe_load(pipeline.read_text())
    spec = GraphSpec.model_validate(raw.get("graph", raw))
    print(to_dot(spec) if fmt == "dot" else to_mermaid(spec), end="")


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


@app.command("run")
def run_pipeline(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (graph + inputs).")],
    coordinator: CoordOpt = DEFAULT_ADDRESS,
    timeout: Annotated[float, typer.Option(help="Per-run deadline (s).")] = 60.0,
    save: Annotated[Path | None, typer.Option(help="Save outputs to this .npz file.")] = None,
    key: KeyOpt = None,
    coordinator_key: CoordKeyOpt = None,
) -> None:
    """Register a pipeline's graph and run it on a running coordinator."""
    from .pipeline import PipelineSpec, make_inputs

    spec = PipelineSpec.from_yaml(pipeline)
    inputs = make_inputs(spec, pipeline.parent)
    with _client(coordinator, key, coordinator_key, timeout) as c:
        c.register(spec.graph)
        for _ in range(spec.repeat):
            result = c.run(spec.graph.name, inputs, timeout_s=timeout)
    print_result(result)
    if save:
        np.savez(save, **result)


@app.command()
def up(cluster: Annotated[Path, typer.Argument(help="Cluster YAML.")],
       log_dir: Annotated[Path | None, typer.Option(help="Where worker logs go.")] = None) -> None:
    """Start a local coordinator and the workers of a cluster YAML; Ctrl-C stops them."""
    from .launcher import ClusterSpec, LocalCluster

    import signal

    def _stop(*_: object) -> None:  # SIGTERM stops the cluster like Ctrl-C does
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)
    spec = ClusterSpec.from_yaml(cluster)
    with LocalCluster(spec, log_dir=str(log_dir) if log_dir else None) as lc:
        console.print(f"coordinator at [bold]{lc.address}[/bold]; workers: "
                      f"{', '.join(lc.workers)}; logs in {lc.log_dir}")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping")


@app.command()
def launch(cluster: Annotated[Path, typer.Argument(help="Cluster YAML.")],
           pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
           timeout: Annotated[float, typer.Option(help="Per-run deadline (s).")] = 300.0) -> None:
    """Start a local cluster, run one pipeline on it, print the results, stop."""
    from .launcher import ClusterSpec, LocalCluster
    from .pipeline import PipelineSpec, make_inputs

    spec = PipelineSpec.from_yaml(pipeline)
    with LocalCluster(ClusterSpec.from_yaml(cluster)) as lc, lc.client(timeout_s=timeout) as c:
        console.print(f"coordinator at {lc.address}; workers: {', '.join(lc.workers)}")
        c.register(spec.graph)
        inputs = make_inputs(spec, pipeline.parent)
        for _ in range(spec.repeat):
            result = c.run(spec.graph.name, inputs, timeout_s=timeout)
        print_result(result)


def _register_model_operations() -> None:
    from . import cli_compat, cli_migrate, cli_params, cli_train

    for module in (cli_params, cli_compat, cli_train, cli_migrate):
        module.register(app)


_register_model_operations()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
