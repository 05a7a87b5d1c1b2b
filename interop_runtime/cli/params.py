"""`interop params ...`: read, write, average, broadcast, export and import worker parameters
(registered by app.py). Every command prints the parameter versions it read or wrote."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    client_session,
    console,
)

params_app = typer.Typer(help="Worker parameters: read, write, average, broadcast, files.",
                         no_args_is_help=True)

WorkerArg = Annotated[str, typer.Argument(help="Worker name.")]
FileArg = Annotated[Path, typer.Argument(help="A .safetensors file.")]
NamesOpt = Annotated[str | None, typer.Option("--names", help="Comma-separated parameter names.")]
PrefixOpt = Annotated[str | None, typer.Option("--prefix", help="Only names starting with this.")]
ExpectOpt = Annotated[int | None, typer.Option("--expect-version",
                                               help="Refuse unless the worker is at this version.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Request timeout (s).")]


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _session(coordinator: str, key: Path | None, coordinator_key: Path | None,
             timeout: float) -> Any:

    return client_session(coordinator, key, coordinator_key, timeout)


def _print(text: str) -> None:

    console.print(text, soft_wrap=True)


def _table(params: dict[str, Any], version: int, max_values: int = 0) -> None:

    table = Table("parameter", "dtype", "shape", *(["values"] if max_values else []),
                  title=f"version {version}")
    for name, p in params.items():
        if isinstance(p, np.ndarray):
            flat = p.reshape(-1)[:max_values]
            values = " ".join(f"{v:.4g}" if np.issubdtype(flat.dtype, np.floating) else str(v)
                              for v in flat) + (" ..." if p.size > max_values else "")
            table.add_row(name, str(p.dtype), str(list(p.shape)), values)
        else:
            table.add_row(name, p["dtype"], str(list(p["shape"])))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the `params` sub-app to the main app."""

    app.add_typer(params_app, name="params")

    @params_app.command("list")
    def list_cmd(worker: WorkerArg, prefix: PrefixOpt = None,
                 coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
                 coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 30.0) -> None:
        """A worker's parameter names, dtypes and shapes, and its parameter version."""
        from interop_runtime.ops.params import plane as paramops

        with _session(coordinator, key, coordinator_key, timeout) as c:
            body = paramops.list_params(c, worker, prefix)
        _table(body["params"], body["version"])

    @params_app.command("get")
    def get_cmd(worker: WorkerArg, names: NamesOpt = None, prefix: PrefixOpt = None,
                save: Annotated[Path | None, typer.Option(help="Also save as safetensors.")] = None,
                coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
                coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 30.0) -> None:
        """Read parameters (all, --names or --prefix); print them, optionally save them."""
        from interop_runtime.ops.params import plane as paramops

        with _session(coordinator, key, coordinator_key, timeout) as c:
            params = paramops.read_params(c, worker, _split(names), prefix=prefix)
        _table(dict(params), params.version, max_values=6)
        if save:
            paramops.save_params(params, save, worker=worker)
            _print(f"saved {len(params)} parameters (version {params.version}) to {save}")

    @params_app.command("set")
    def set_cmd(worker: WorkerArg, file: FileArg, expect_version: ExpectOpt = None,
                coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
                coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 30.0) -> None:
        """Write the parameters of a safetensors file into a worker."""
        from interop_runtime.ops.params import plane as paramops

        with _session(coordinator, key, coordinator_key, timeout) as c:
            version = paramops.import_safetensors(c, worker, file, expected_version=expect_version)
        _print(f"{worker}: parameters now at version {version}")

    @params_app.command("average")
    def average_cmd(
        workers: Annotated[list[str], typer.Argument(help="Workers to average (twins).")],
        weights: Annotated[str | None, typer.Option(help="Comma-separated, one per worker "
                                                         "(normalized); equal if omitted.")] = None,
        into: Annotated[list[str] | None, typer.Option(help="Write only to this worker "
                                                            "(repeatable); default: all.")] = None,
        names: NamesOpt = None, prefix: PrefixOpt = None,
        coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 30.0) -> None:
        """Weighted average of the workers' parameters, written back at the versions read."""
        from interop_runtime.ops.params import plane as paramops

        try:
            w = [float(x) for x in _split(weights) or []] or None
        except ValueError:
            _print(f"[red]error:[/red] --weights must be numbers, got {escape(weights or '')}")
            raise typer.Exit(2) from None
        with _session(coordinator, key, coordinator_key, timeout) as c:
            result = paramops.average(c, workers, w, into=into or None, names=_split(names),
                                      prefix=prefix)
        _print(f"averaged {len(result.params)} parameters: " + ", ".join(
            f"{n} x {result.weights[n]:.4g} (read at version {v})"
            for n, v in result.read_versions.items()))
        for n, v in result.written.items():
            _print(f"{n}: parameters now at version {v}")

    @params_app.command("broadcast")
    def broadcast_cmd(
        source: Annotated[str, typer.Argument(help="Worker to copy from.")],
        destinations: Annotated[list[str], typer.Argument(help="Workers to copy to.")],
        names: NamesOpt = None, prefix: PrefixOpt = None,
        coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 30.0) -> None:
        """Copy one worker's parameters to the others."""
        from interop_runtime.ops.params import plane as paramops

        with _session(coordinator, key, coordinator_key, timeout) as c:
            result = paramops.broadcast(c, source, destinations, names=_split(names),
                                        prefix=prefix)
        _print(f"{source}: read at version {result.source_version}")
        for n, v in result.written.items():
            _print(f"{n}: parameters now at version {v}")

    @params_app.command("export")
    def export_cmd(worker: WorkerArg, file: FileArg, names: NamesOpt = None,
                   prefix: PrefixOpt = None, coordinator: CoordOpt = DEFAULT_ADDRESS,
                   key: KeyOpt = None, coordinator_key: CoordKeyOpt = None,
                   timeout: TimeoutOpt = 30.0) -> None:
        """Save a worker's parameters as safetensors (the version goes into the metadata)."""
        from interop_runtime.ops.params import plane as paramops

        with _session(coordinator, key, coordinator_key, timeout) as c:
            version = paramops.export_safetensors(c, worker, file, _split(names), prefix=prefix)
        _print(f"{worker}: version {version} saved to {file}")

    @params_app.command("import")
    def import_cmd(worker: WorkerArg, file: FileArg, expect_version: ExpectOpt = None,
                   verify_version: Annotated[int | None, typer.Option(
                       "--verify-version", help="Refuse a file that does not hold this "
                                                "version (its metadata).")] = None,
                   coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
                   coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 30.0) -> None:
        """Restore a worker's parameters from a safetensors file."""
        from interop_runtime.ops.params import plane as paramops

        with _session(coordinator, key, coordinator_key, timeout) as c:
            version = paramops.import_safetensors(c, worker, file, expected_version=expect_version,
                                                  verify_version=verify_version)
        _print(f"{worker}: parameters now at version {version}")
