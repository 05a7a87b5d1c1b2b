"""`coordinator start` and `worker start` without the CLI framework: the daemons' bodies, and
``main``, the entry of ``python -m interop_runtime`` (what LocalCluster and `interop up` run).

An idle daemon should not hold typer, rich and the client in memory (issue 10, goal 6;
bench/idle_bench.py), so ``main`` reads the two daemon command lines itself. It takes only
what it fully understands: the options of cli/daemons.py with plain values, each at most
once. Anything else (--help, a bad value, an option it does not know, any other command)
goes to the full CLI, so what the user sees is what the typer app says. Errors print through
the full CLI's own console and error path, imported only then.

The option tables mirror cli/daemons.py; tests/test_idle_memory.py pins them to it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"  # cli.common's; that module imports typer
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

# option -> (parameter, kind, default, environment variable); kinds: str, int, float, path,
# "int?" / "float?" / "str?" / "path?" (None by default), flag (--x only), bool (--x/--no-x),
# level, format
Option = tuple[str, str, Any, str | None]
_SECURITY: dict[str, Option] = {
    "--key": ("key", "path?", None, "INTEROP_KEY"),
    "--authorized": ("authorized", "path?", None, "INTEROP_AUTHORIZED"),
    "--insecure": ("insecure", "flag", False, None),
    "--log-level": ("log_level", "level", "info", None),
    "--log-format": ("log_format", "format", "text", None),
}
COORDINATOR: dict[str, Option] = {
    "--bind": ("bind", "str", DEFAULT_ADDRESS, None),
    "--state": ("state", "str", "interop-state.sqlite", None),
    "--heartbeat": ("heartbeat", "float", 1.0, None),
    "--dead-after": ("dead_after", "float?", None, None),
    "--max-message-bytes": ("max_message_bytes", "int", 1 << 31, None),
    "--metrics-port": ("metrics_port", "int?", None, None),
    "--metrics-addr": ("metrics_addr", "str", "127.0.0.1", None),
    "--max-runs": ("max_runs", "int", 10_000, None),
    "--max-runs-per-client": ("max_runs_per_client", "int", 1_000, None),
    "--dashboard-port": ("dashboard_port", "int?", None, None),
    "--dashboard-addr": ("dashboard_addr", "str", "127.0.0.1", None),
    **_SECURITY,
}
WORKER: dict[str, Option] = {
    "--plugin": ("plugin", "str", None, None),  # required
    "--coordinator": ("coordinator", "str", DEFAULT_ADDRESS, "INTEROP_COORDINATOR"),
    "--config": ("config", "path?", None, None),
    "--name": ("name", "str?", None, None),
    "--bind": ("bind", "str", "tcp://127.0.0.1:0", None),
    "--advertise": ("advertise", "str?", None, None),
    "--device": ("device", "str", "cpu", None),
    "--heartbeat": ("heartbeat", "float", 1.0, None),
    "--max-message-bytes": ("max_message_bytes", "int", 1 << 31, None),
    "--shm": ("shm", "bool", True, None),
    "--shm-pool-mib": ("shm_pool_mib", "int", 4096, None),
    "--keep-memory": ("keep_memory", "bool", True, None),
    "--pool": ("pool", "str?", None, None),
    "--model-repository": ("model_repository", "path?", None, None),
    "--model-root": ("model_root", "str?", None, "INTEROP_MODEL_ROOT"),
    "--coordinator-key": ("coordinator_key", "path?", None, "INTEROP_COORDINATOR_KEY"),
    **_SECURITY,
}
ALIASES = {"-c": "--coordinator"}  # worker only


class StartFailed(Exception):
    """A daemon that cannot start or stopped on a user error: one line, and an exit code."""

    def __init__(self, prefix: str, message: str, code: int) -> None:
        super().__init__(message)
        self.prefix, self.message, self.code = prefix, message, code


def _convert(kind: str, value: str) -> Any:
    """The option's value, or ValueError when typer should be the one to say what is wrong."""
    base = kind.rstrip("?")
    if base in ("int", "float"):
        return int(value) if base == "int" else float(value)
    if base == "path":
        return Path(value)
    if (base == "level" and value not in LEVELS) or (base == "format" and value not in FORMATS):
        raise ValueError(value)  # typer takes other spellings (INFO) or names the choices
    return value


def parse(table: dict[str, Option], args: list[str]) -> dict[str, Any] | None:
    """Keyword arguments for the command, or None for "let the full CLI read this"."""
    given: dict[str, Any] = {}
    rest = list(args)
    try:
        while rest:
            arg = rest.pop(0)
            name, eq, inline = arg.partition("=")
            if eq and not name.startswith("--"):
                return None  # to click, -c=X means the value "=X"
            name = ALIASES.get(name, name) if table is WORKER else name
            # --no-shm: the negative of a --shm/--no-shm pair
            negated = name.startswith("--no-") and table.get("--" + name[5:], ("", ""))[1] == "bool"
            param, kind, _, _ = table["--" + name[5:] if negated else name]
            if param in given:
                return None  # typer takes the last one; leave such lines to it
            if kind in ("flag", "bool"):
                if eq:
                    return None
                given[param] = not negated
                continue
            value = inline if eq else rest.pop(0)
            if not eq and value.startswith("--"):
                return None
            given[param] = _convert(kind, value)
        for param, kind, default, env in table.values():
            if param not in given:
                from_env = os.environ.get(env) if env else None
                given[param] = _convert(kind, from_env) if from_env else default
    except (KeyError, IndexError, ValueError):
        return None
    return None if given.get("plugin", "") is None else given


def _security(key: Path | None, authorized: Path | None, coordinator_key: Path | None = None
              ) -> Any:
    if key is None:
        return None
    from interop_runtime.transport.security import Security

    return Security.from_files(key, authorized, coordinator_key)


def run_coordinator(*, bind: str, state: str, heartbeat: float, dead_after: float | None,
                    max_message_bytes: int, log_level: str, key: Path | None,
                    authorized: Path | None, insecure: bool, metrics_port: int | None,
                    metrics_addr: str, log_format: str, max_runs: int, max_runs_per_client: int,
                    dashboard_port: int | None, dashboard_addr: str) -> None:
    """Run the coordinator in the foreground until SIGTERM/SIGINT."""
    import zmq

    from interop_runtime.cli.logs import setup_logging
    from interop_runtime.coordinator.daemon import Coordinator

    setup_logging(str(log_level), str(log_format), "coordinator")
    try:
        coordinator = Coordinator(bind, state_path=state, heartbeat_s=heartbeat,
                                  dead_after_s=dead_after, max_message_bytes=max_message_bytes,
                                  security=_security(key, authorized), insecure=insecure,
                                  metrics_port=metrics_port, metrics_addr=metrics_addr,
                                  max_runs=max_runs, max_runs_per_client=max_runs_per_client,
                                  dashboard_port=dashboard_port, dashboard_addr=dashboard_addr)
    except (ValueError, OSError, zmq.ZMQError) as exc:  # a bad address, a port in use
        raise StartFailed("cannot start coordinator", str(exc), 2) from None
    coordinator.serve_forever()


def run_worker(*, plugin: str, coordinator: str, config: Path | None, name: str | None,
               bind: str, advertise: str | None, device: str, heartbeat: float,
               max_message_bytes: int, shm: bool, shm_pool_mib: int, keep_memory: bool,
               pool: str | None, log_level: str, key: Path | None, authorized: Path | None,
               coordinator_key: Path | None, insecure: bool, log_format: str,
               model_repository: Path | None = None, model_root: str | None = None) -> None:
    """Load the model, register with the coordinator, serve."""
    from interop_runtime.transport.memory import keep_freed_memory

    if keep_memory:  # first: before any library starts a thread
        keep_freed_memory()
    import zmq

    from interop_runtime.cli.logs import setup_logging
    from interop_runtime.graph.config_files import ConfigError, read_yaml
    from interop_runtime.transport.security import check_bind_allowed
    from interop_runtime.wire.errors import InteropError
    from interop_runtime.worker.host import WorkerHost
    from interop_runtime.worker.model_roots import parse_roots
    from interop_runtime.worker.plugin import PluginUnavailable, create_plugin

    fail = "cannot start worker"
    setup_logging(str(log_level), str(log_format), f"worker:{name or plugin}")
    security = _security(key, authorized, coordinator_key)
    try:
        check_bind_allowed(bind, security, insecure)
    except ValueError as exc:
        raise StartFailed(fail, str(exc), 2) from None
    try:
        cfg: dict[str, Any] = (read_yaml(config) if config else {}) or {}
        # the host's, not the plugin's (README "Dynamic batching")
        batching = cfg.pop("batching", None) if isinstance(cfg, dict) else None
    except ConfigError as exc:  # names the file, line and column
        raise StartFailed(fail, str(exc), 2) from None
    try:
        # an empty config: no start-up model, only models loaded later (README "Model
        # repository")
        loaded = create_plugin(plugin, cfg, device) if cfg else None
    except PluginUnavailable as exc:
        raise StartFailed(fail, str(exc), 3) from None
    except Exception as exc:  # a bad config or device: say so, do not trace back
        raise StartFailed(fail, f"{type(exc).__name__}: {exc}", 2) from None
    try:
        host = WorkerHost(name or f"{plugin}-{os.getpid()}", loaded, plugin, coordinator,
                          bind=bind, device=device, heartbeat_s=heartbeat,
                          max_message_bytes=max_message_bytes, security=security,
                          reload=lambda: create_plugin(plugin, cfg, device), advertise=advertise,
                          shm=shm, shm_pool_bytes=shm_pool_mib << 20, pool=pool,
                          batching=batching, model_roots=parse_roots(model_root))
    except (ValueError, OSError, zmq.ZMQError) as exc:  # a bad address, a port in use
        raise StartFailed(fail, str(exc), 2) from None
    if model_repository is not None:
        host.watch(str(model_repository))
    try:
        host.serve_forever()
    except (InteropError, TimeoutError) as exc:  # refused or no coordinator: one line
        raise StartFailed("worker stopped", str(exc), 1) from None


def print_failure(exc: StartFailed) -> None:
    """The one red line the typer commands print too (through the CLI's console)."""
    from rich.markup import escape

    from interop_runtime.cli.common import console

    console.print(f"[red]{exc.prefix}:[/red] {escape(exc.message)}", soft_wrap=True)


def _run(command: str, kwargs: dict[str, Any]) -> int:
    try:
        (run_coordinator if command == "coordinator" else run_worker)(**kwargs)
    except StartFailed as exc:
        print_failure(exc)
        return exc.code
    except KeyboardInterrupt:
        return 130  # what typer does
    except Exception as exc:  # the CLI's one error path (errors.py): one line, exit 1
        import typer

        from interop_runtime.cli.errors import report

        try:
            report(exc)
        except typer.Exit as done:
            return int(done.exit_code)
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) >= 2 and args[1] == "start" and args[0] in ("coordinator", "worker"):
        kwargs = parse(COORDINATOR if args[0] == "coordinator" else WORKER, args[2:])
        if kwargs is not None:
            sys.exit(_run(args[0], kwargs))
    from interop_runtime.cli.app import main as full

    full()
