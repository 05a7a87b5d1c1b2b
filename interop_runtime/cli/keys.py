"""`interop keys`: CURVE key pairs."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from interop_runtime.cli.common import console, fail
from interop_runtime.transport.allowlist import ROLE_KINDS, Role, inferred_role
from interop_runtime.transport.security import generate_keys

RoleChoice = StrEnum("RoleChoice", {k: k for k in ROLE_KINDS})  # type: ignore[misc]

keys_app = typer.Typer(help="CURVE keys.", no_args_is_help=True)


@keys_app.command("generate")
def keys_generate(directory: Annotated[Path, typer.Argument(help="Where the keys go.")],
                  names: Annotated[list[str], typer.Argument(help="One key pair per name, e.g. "
                                                                  "coordinator worker1 client")],
                  authorize: Annotated[bool, typer.Option(help="Also copy the public keys into "
                                                               "DIRECTORY/authorized/.")] = True,
                  role: Annotated[RoleChoice | None, typer.Option(
                      "--role", help="coordinator, worker or client for every NAME (default: "
                                     "`coordinator` is the coordinator, `client` and client-* "
                                     "are clients, any other name is that worker).")] = None,
                  pool: Annotated[str | None, typer.Option(
                      "--pool", help="Grant these worker keys membership of a replica pool "
                                     "(its traffic goes to every member).")] = None,
                  ) -> None:
    """Create CURVE key pairs: NAME.key (public, with its role) and NAME.key_secret (keep it
    private). The allow-list binds each key to its role: a worker key may register only as
    its own name, a client key may not register at all."""
    for name in names:
        chosen = inferred_role(name) if role is None else Role(
            str(role), name if role == "worker" else None)  # type: ignore[arg-type]
        if pool is not None:
            if chosen.kind != "worker":
                fail(f"--pool is for worker keys; {name!r} is {chosen.describe()}")
            chosen = Role("worker", chosen.worker, pool)
        public, secret = generate_keys(directory, name, authorize=authorize, role=chosen)
        console.print(f"{name} ({chosen.describe()}): {public}  {secret}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
