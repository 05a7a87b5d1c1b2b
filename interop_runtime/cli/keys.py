"""`interop keys`: CURVE key pairs."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from pathlib import Path
from typing import Annotated

import typer

from interop_runtime.cli.common import console
from interop_runtime.transport.security import generate_keys

keys_app = typer.Typer(help="CURVE keys.", no_args_is_help=True)


@keys_app.command("generate")
def keys_generate(directory: Annotated[Path, typer.Argument(help="Where the keys go.")],
                  names: Annotated[list[str], typer.Argument(help="One key pair per name, e.g. "
                                                                  "coordinator worker1 client")],
                  authorize: Annotated[bool, typer.Option(help="Also copy the public keys into "
                                                               "DIRECTORY/authorized/.")] = True
                  ) -> None:
    """Create CURVE key pairs: NAME.key (public) and NAME.key_secret (keep it private)."""
    for name in names:
        public, secret = generate_keys(directory, name, authorize=authorize)
        console.print(f"{name}: {public}  {secret}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
