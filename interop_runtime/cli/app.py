"""The ``interop`` command line: the main app, assembled from one module per command group."""

import typer

from interop_runtime.cli import (
    compat,
    daemons,
    info,
    keys,
    migrate,
    params,
    pipelines,
    train,
)

app = typer.Typer(help="interop-runtime: run models from different frameworks as one system.",
                  no_args_is_help=True, add_completion=False)
for group in (daemons, keys, info, pipelines, params, compat, train, migrate):
    group.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
