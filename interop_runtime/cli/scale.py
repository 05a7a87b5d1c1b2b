"""`interop scale POOL N`: give a replica pool of a running `interop up` cluster N
replicas; runs keep flowing (new replicas register, old ones drain first)."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from typing import Annotated

import typer

from interop_runtime.cli.common import console, fail
from interop_runtime.client.statedir import find_cluster_state


def scale(pool: Annotated[str, typer.Argument(help="The replica pool.")],
          count: Annotated[int, typer.Argument(help="How many replicas it should have.")],
          cluster: Annotated[str | None, typer.Option(
              help="The cluster's name (default: the one `interop up` started last).")] = None,
          timeout: Annotated[float, typer.Option(help="Wait this long (s).")] = 180.0) -> None:
    """Scale a replica pool of a local cluster started with `interop up`."""
    from interop_runtime.client.scaling import request_scale

    folder = find_cluster_state(cluster)
    if folder is None:
        fail(f"no running cluster{' named ' + repr(cluster) if cluster else ''} was started "
             f"with `interop up` on this machine")
    answer = request_scale(folder, pool, count, timeout)
    if "error" in answer:
        fail(f"cannot scale pool {pool}: {answer['error']}")
    replicas = answer.get("replicas") or []
    console.print(f"pool {pool}: {len(replicas)} replicas ({', '.join(replicas)})",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("scale")(scale)
