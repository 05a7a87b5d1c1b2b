"""What every command shares: the console, the connection and key options, the client
session that turns a failure into one line, and logging set-up."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from interop_runtime.client import Client
from interop_runtime.transport.security import Security
from interop_runtime.wire.errors import InteropError

console = Console()

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
KeyOpt = Annotated[Path | None, typer.Option("--key", envvar="INTEROP_KEY",
                                             help="This process's CURVE secret key file "
                                                  "(NAME.key_secret); turns CURVE on.")]
AuthOpt = Annotated[Path | None, typer.Option("--authorized", envvar="INTEROP_AUTHORIZED",
                                              help="Directory of public keys allowed to connect.")]
CoordKeyOpt = Annotated[Path | None, typer.Option("--coordinator-key",
                                                  envvar="INTEROP_COORDINATOR_KEY",
                                                  help="The coordinator's public key file.")]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Run without CURVE keys, on "
                                                               "loopback only: trusts every "
                                                               "local process.")]

CoordOpt = Annotated[str, typer.Option("--coordinator", "-c", help="Coordinator address.",
                                       envvar="INTEROP_COORDINATOR")]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="text or json (one object a line).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Request timeout (s).")]


def security_from_files(key: Path | None, authorized: Path | None = None,
                        coordinator_key: Path | None = None) -> Security | None:
    """CURVE from key files; ``None`` (plain text) without a key."""
    if key is None:
        return None
    return Security.from_files(key, authorized, coordinator_key)


def connect(coordinator: str, key: Path | None, coordinator_key: Path | None, timeout_s: float
            ) -> Client:
    return Client(coordinator, timeout_s=timeout_s,
                  security=security_from_files(key, None, coordinator_key))


@contextmanager
def client_session(coordinator: str, key: Path | None, coordinator_key: Path | None,
                   timeout: float) -> Iterator[Any]:
    """A client for a command; a failure prints one clean line and exits 1, no traceback."""
    try:
        with connect(coordinator, key, coordinator_key, timeout) as c:
            yield c
    except (InteropError, ValueError, OSError) as exc:
        fail(str(exc))


def fail(message: str, *, prefix: str = "error", code: int = 1) -> None:
    """Print one red line and exit with ``code``."""
    console.print(f"[red]{prefix}:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def setup_logging(level: str, fmt: str = "text", component: str | None = None) -> None:
    from interop_runtime.cli.logs import setup_logging as setup

    setup(level, fmt, component)
