"""`interop coordinator start` and `interop worker start`: the two daemons, in the foreground."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from interop_runtime.cli import lean
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
)

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
    # the body lives in lean, which `python -m interop_runtime` runs without typer
    _start(lean.run_coordinator, locals())


def _start(run: Callable[..., None], options: dict[str, Any]) -> None:
    try:
        run(**options)
    except lean.StartFailed as exc:
        lean.print_failure(exc)
        raise typer.Exit(exc.code) from None


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
    pool: Annotated[str | None, typer.Option(
        help="Serve as a replica of this pool: graph nodes with `pool: NAME` run on any of "
             "its replicas (under CURVE, the key must grant the pool).")] = None,
    model_repository: Annotated[Path | None, typer.Option(
        help="Watch this folder for models (NAME.onnx, NAME/VERSION/model.onnx): new ones "
             "are loaded, changed ones replaced, removed ones unloaded.")] = None,
    model_root: Annotated[str | None, typer.Option(
        envvar="INTEROP_MODEL_ROOT",
        help="Folders (DIR[:DIR...]) that models loaded over the wire (`interop models load`) "
             "may read files from; without one (or --model-repository) they may name no "
             "file.")] = None,
    log_level: LogLevelOpt = LogLevel.info,
    key: KeyOpt = None,
    authorized: AuthOpt = None,
    coordinator_key: CoordKeyOpt = None,
    insecure: InsecureOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Start a worker: load the model, register with the coordinator, serve."""
    # the body lives in lean (run_worker), which `python -m interop_runtime` runs without typer
    _start(lean.run_worker, locals())


def register(app: typer.Typer) -> None:
    app.add_typer(coordinator_app, name="coordinator")
    app.add_typer(worker_app, name="worker")
