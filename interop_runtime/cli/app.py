"""The ``interop`` command line: the main app, assembled from one module per command group.

Every command runs inside errors.ErrorGroup: one error path for the whole CLI."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from typing import Annotated

import typer

from interop_runtime.cli import (
    compat,
    daemons,
    info,
    inventory,
    keys,
    migrate,
    models,
    observe,
    params,
    pipelines,
    scale,
    train,
)
from interop_runtime.cli.errors import ErrorGroup, set_debug

app = typer.Typer(help="interop-runtime: run models from different frameworks as one system.",
                  no_args_is_help=True, add_completion=False, cls=ErrorGroup)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from interop_runtime.wire.messages import PROTOCOL_VERSION

        try:
            package = version("interop-runtime")
        except PackageNotFoundError:  # run from a source tree that was never installed
            package = "unknown"
        print(f"interop-runtime {package} (protocol {PROTOCOL_VERSION})")
        raise typer.Exit()


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", envvar="INTEROP_DEBUG",
                                        help="Show the traceback of a failure instead of "
                                             "one line.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """interop-runtime: run models from different frameworks as one system."""
    set_debug(debug)


for group in (daemons, keys, info, inventory, pipelines, params, compat, train, migrate,
              observe, scale, models):
    group.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
