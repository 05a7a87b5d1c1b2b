"""What every command shares: the console, the connection and key options, the client
session (which first probes the coordinator), and logging set-up. Failures go to the one
error path in errors.py."""

# no `from __future__ import annotations`: typer reads the option types at runtime
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape

from interop_runtime.cli.errors import CliError
from interop_runtime.client import Client
from interop_runtime.transport.security import Security
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import RunTimeoutError
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg

console = Console()

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
PROBE_S = 2.0  # how long a command waits for the coordinator's first answer


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


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
LogFormatOpt = Annotated[LogFormat, typer.Option("--log-format", case_sensitive=False,
                                                 help="text, or json (one object a line).")]
LogLevelOpt = Annotated[LogLevel, typer.Option("--log-level", case_sensitive=False,
                                               help="Log level.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Request timeout (s).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output: JSON on stdout.")]


def security_from_files(key: Path | None, authorized: Path | None = None,
                        coordinator_key: Path | None = None) -> Security | None:
    """CURVE from key files; ``None`` (plain text) without a key."""
    if key is None:
        return None
    return Security.from_files(key, authorized, coordinator_key)


def _reachable(address: str) -> bool | None:
    """Whether anything listens at ``address`` (tcp: a TCP connect; ipc: the socket file);
    None when that cannot be told without ZeroMQ (inproc, odd addresses)."""
    try:
        url = urlsplit(address)
        if url.scheme == "ipc":
            return Path(address[len("ipc://"):]).exists()
        if url.scheme != "tcp" or not url.hostname or not url.port:
            return None
    except ValueError:
        return None
    deadline = time.monotonic() + PROBE_S
    while True:  # a coordinator that is starting binds within the probe's time
        try:
            with socket.create_connection((url.hostname, url.port),
                                          timeout=max(0.1, deadline - time.monotonic())):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def no_coordinator(address: str) -> str:
    return (f"no coordinator at {address} (is it running? start one with 'interop up "
            f"CLUSTER.yaml', or pass -c/--coordinator or INTEROP_COORDINATOR)")


def probe(client: Client, *, secure: bool) -> None:
    """One CONTROL ping within PROBE_S, so that a command never waits out a long timeout
    on a coordinator that is not there; CliError says what to try."""
    address = client.address
    if _reachable(address) is False:
        raise CliError(no_coordinator(address))
    try:
        client.request(ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", action="ping"),
                       timeout_s=PROBE_S)
    except RunTimeoutError:
        # the port is open but nothing answers: mostly a CURVE handshake that never completes
        if secure:
            raise CliError(f"no answer from {address} within {PROBE_S:.0f}s: check that "
                           f"--key and --coordinator-key belong to this cluster (see "
                           f"'interop up' output), or that it is secure at all") from None
        raise CliError(f"no answer from {address} within {PROBE_S:.0f}s: if the cluster is "
                       f"secure, pass --key and --coordinator-key (see 'interop up' "
                       f"output)") from None


def connect(coordinator: str, key: Path | None, coordinator_key: Path | None, timeout_s: float
            ) -> Client:
    """A client that has heard the coordinator answer once (see probe)."""
    client = Client(coordinator, timeout_s=timeout_s,
                    security=security_from_files(key, None, coordinator_key))
    try:
        probe(client, secure=key is not None)
    except BaseException:
        client.close()
        raise
    return client


@contextmanager
def client_session(coordinator: str, key: Path | None, coordinator_key: Path | None,
                   timeout: float) -> Iterator[Any]:
    """A probed client for a command; failures reach the one error path (errors.py)."""
    with connect(coordinator, key, coordinator_key, timeout) as c:
        yield c


def fail(message: str, *, prefix: str = "error", code: int = 1) -> None:
    """Print one red line and exit with ``code``."""
    console.print(f"[red]{prefix}:[/red] {escape(message)}", soft_wrap=True,
                      highlight=False)
    raise typer.Exit(code)


def setup_logging(level: str, fmt: str = "text", component: str | None = None) -> None:
    from interop_runtime.cli.logs import setup_logging as setup

    setup(str(level), str(fmt), component)
