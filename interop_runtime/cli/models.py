"""`interop models load|unload|list`: models in running workers, by name and version
(registered by app.py). A failure is one line (errors.py)."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    TimeoutOpt,
    client_session,
    console,
)
from interop_runtime.cli.errors import CliError

models_app = typer.Typer(help="Models in running workers: load, replace, unload, list.",
                         no_args_is_help=True)

WorkerArg = Annotated[str, typer.Argument(help="Worker name.")]
NameArg = Annotated[str, typer.Argument(help="Model name; its functions are NAME/FUNCTION.")]


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

    @models_app.command("load")
    def load_cmd(worker: WorkerArg, name: NameArg,
                 path: Annotated[Path, typer.Argument(help="The model file (e.g. model.onnx).")],
                 version: Annotated[str | None, typer.Option(help="Model version.")] = None,
                 plugin: Annotated[str | None, typer.Option(
                     help="Plugin to load it with (default: the worker's).")] = None,
                 coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
                 coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 120.0) -> None:
        """Load a model into a running worker, or replace the version it has."""
        if not path.is_file():
            raise CliError(f"model file {str(path)!r} does not exist")
        with client_session(coordinator, key, coordinator_key, timeout) as c:
            body = c.load_model(worker, name, path, version=version, plugin=plugin,
                                timeout_s=timeout)
        was = f" (replaced version {body['replaced']})" if body.get("replaced") else ""
        console.print(f"{escape(worker)}: loaded {escape(name)} version "
                      f"{escape(str(body.get('version')))}{escape(was)}: "
                      f"{escape(', '.join(body.get('functions', [])) or 'no functions')}",
                      soft_wrap=True, highlight=False)

    @models_app.command("unload")
    def unload_cmd(worker: WorkerArg, name: NameArg,
                   coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
                   coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 30.0) -> None:
        """Unload a model from a running worker."""
        with client_session(coordinator, key, coordinator_key, timeout) as c:
            body = c.unload_model(worker, name, timeout_s=timeout)
        console.print(f"{escape(worker)}: unloaded {escape(name)} version "
                      f"{escape(str(body.get('version')))}", soft_wrap=True, highlight=False)

    @models_app.command("list")
    def list_cmd(worker: Annotated[str | None, typer.Argument(
                     help="Only this worker (default: every live one).")] = None,
                 coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
                 coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 30.0) -> None:
        """The models loaded in the workers, with their versions and functions."""
        with client_session(coordinator, key, coordinator_key, timeout) as c:
            models = c.models(worker)
        table = Table("worker", "model", "version", "plugin", "source", "functions")
        for m in models:
            table.add_row(*(escape(str(m.get(k, ""))) for k in
                            ("worker", "name", "version", "plugin", "source")),
                          escape(", ".join(m.get("functions", []))))
        console.print(table)
