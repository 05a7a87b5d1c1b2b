"""`interop coordinator start` and `interop worker start`: the two daemons, in the foreground."""

# no `from __future__ import annotations`: typer reads the option types at runtime
import os
from pathlib import Path
from typing import Annotated, Any

import typer
import zmq
from rich.markup import escape

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    AuthOpt,
    CoordKeyOpt,
    CoordOpt,
    InsecureOpt,
    KeyOpt,
    LogFormatOpt,
    LogLevel,
    LogLevelOpt,
    console,
    security_from_files,
    setup_logging,
)
from interop_runtime.graph.pipeline import ConfigError, read_yaml
from interop_runtime.wire.errors import InteropError

coordinator_app = typer.Typer(help="The coordinator daemon.", no_args_is_help=True)
worker_app = typer.Typer(help="Worker processes.", no_args_is_help=True)


@coordinator_app.command("start")
def coordinator_start(
    bind: Annotated[str, typer.Option(help="Address to bind (tcp://, ipc://).")] = DEFAULT_ADDRESS,
    state: Annotated[str, typer.Option(help="SQLite file for graphs, runs and results.")] =
        "interop-state.sqlite",
    heartbeat: Annotated[float, typer.Option(help="Expected worker heartbeat interval (s).")] = 1.0,
    dead_after: Annotated[float | None, typer.Option(help="Mark a worker dead after this many "
                                                          "seconds without heartbeat.")] = None,
    max_message_bytes: Annotated[int, typer.Option(help="Reject bigger messages.")] = 1 << 31,
    log_level: LogLevelOpt = LogLevel.info,
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
    dashboard_port: Annotated[int | None, typer.Option(
        help="Serve the web dashboard on this port (0: any free port); its URL is logged.")]
        = None,
    dashboard_addr: Annotated[str, typer.Option(
        help="Address for the dashboard; off loopback it needs CURVE keys, and a token "
             "(in the logged URL).")] = "127.0.0.1",
) -> None:
    """Run the coordinator in the foreground (SIGTERM stops it cleanly)."""
    from interop_runtime.coordinator.daemon import Coordinator

    setup_logging(log_level, log_format, "coordinator")
    try:
        coordinator = Coordinator(bind, state_path=state, heartbeat_s=heartbeat,
                                  dead_after_s=dead_after, max_message_bytes=max_message_bytes,
                                  security=security_from_files(key, authorized), insecure=insecure,
                                  metrics_port=metrics_port, metrics_addr=metrics_addr,
                                  max_runs=max_runs, max_runs_per_client=max_runs_per_client,
                                  dashboard_port=dashboard_port, dashboard_addr=dashboard_addr)
    except (ValueError, OSError, zmq.ZMQError) as exc:  # a bad address, a port in use
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
    shm: Annotated[bool, typer.Option(
        help="Same-host shared memory for tensors of 64 KiB and more (--no-shm: frames "
             "only, as between hosts).")] = True,
    shm_pool_mib: Annotated[int, typer.Option(
        help="Most shared memory this worker's segments take; beyond it, runs get busy.")]
        = 4096,
    keep_memory: Annotated[bool, typer.Option(
        help="Keep freed memory mapped so that large frames reuse it (no page faults per "
             "hop); --no-keep-memory returns it to the OS.")] = True,
    log_level: LogLevelOpt = LogLevel.info,
    key: KeyOpt = None,
    authorized: AuthOpt = None,
    coordinator_key: CoordKeyOpt = None,
    insecure: InsecureOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Start a worker: load the model, register with the coordinator, serve."""
    from interop_runtime.transport.memory import keep_freed_memory
    from interop_runtime.transport.security import check_bind_allowed

    if keep_memory:  # first: before any library starts a thread
        keep_freed_memory()
    from interop_runtime.worker.host import WorkerHost
    from interop_runtime.worker.plugin import PluginUnavailable, create_plugin

    setup_logging(log_level, log_format, f"worker:{name or plugin}")
    security = security_from_files(key, authorized, coordinator_key)
    try:
        check_bind_allowed(bind, security, insecure)
    except ValueError as exc:
        console.print(f"[red]cannot start worker:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        cfg: dict[str, Any] = (read_yaml(config) if config else {}) or {}
    except ConfigError as exc:  # names the file, line and column
        console.print(f"[red]cannot start worker:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
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
                          reload=lambda: create_plugin(plugin, cfg, device), advertise=advertise,
                          shm=shm, shm_pool_bytes=shm_pool_mib << 20)
    except (ValueError, OSError, zmq.ZMQError) as exc:  # a bad address, a port in use
        console.print(f"[red]cannot start worker:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        host.serve_forever()
    except (InteropError, TimeoutError) as exc:  # refused or no coordinator: one line
        console.print(f"[red]worker stopped:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.add_typer(coordinator_app, name="coordinator")
    app.add_typer(worker_app, name="worker")
