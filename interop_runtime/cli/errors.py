"""The CLI's one error path: every command runs inside ``ErrorGroup.invoke``, which turns a
user error into one red line and exit 1 (``--debug`` or ``INTEROP_DEBUG=1``: the traceback).

    InteropError         error [code]: message (where)
    ConfigError          error: FILE: KEY: problem            (graph/pipeline.py)
    ValidationError      error: invalid MODEL: KEY: problem   (a model read elsewhere)
    YAMLError            error: YAML syntax: line L, column C: problem
    OSError, ValueError  error: one line
    anything else        error: internal: Type: message (rerun with --debug for the traceback)

Typer's own usage errors (exit 2), ``typer.Exit`` and Ctrl-C pass through untouched.
"""

# no `from __future__ import annotations`: typer reads the option types at runtime
import os
import sys
import traceback
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from interop_runtime.graph.pipeline import ConfigError, describe_validation
from interop_runtime.wire.errors import InteropError
from interop_runtime.wire.model import WireValidationError, error_location

# stdout, as the CLI always printed its one-line errors (scripts and tests read them there)
_err = Console()
# typer ships its own copy of click: its ClickException is the base of typer.BadParameter
_CLICK: type[Exception] = next(c for c in typer.BadParameter.__mro__
                               if c.__name__ == "ClickException")
_debug = False


class CliError(Exception):
    """A failure the CLI itself found (no coordinator, a bad combination of options): its
    message is the whole line."""


def set_debug(on: bool) -> None:
    global _debug
    _debug = on


def debugging() -> bool:
    return _debug or os.environ.get("INTEROP_DEBUG", "").lower() in ("1", "true", "yes")


def one_line(exc: BaseException) -> str:
    """What the user sees for ``exc``, without the leading ``error``."""
    if isinstance(exc, InteropError):
        where = ", ".join(f"{k}={v}" for k, v in exc.details().items())
        return f" [{exc.code.value}]: {exc.message}" + (f" ({where})" if where else "")
    if isinstance(exc, ConfigError | CliError):
        return f": {exc}"
    if isinstance(exc, ValidationError):
        return f": invalid {exc.title}: {describe_validation(exc)}"
    if isinstance(exc, WireValidationError):  # a wire model (graph spec, tensor spec)
        loc, problem = error_location(exc)
        return f": invalid: {loc}: {problem}" if loc else f": invalid: {problem}"
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f": YAML syntax: {at}{getattr(exc, 'problem', None) or exc}"
    if isinstance(exc, FileNotFoundError):
        return f": no such file: {exc.filename or exc}"
    if isinstance(exc, IsADirectoryError):
        return f": is a directory, not a file: {exc.filename or exc}"
    if isinstance(exc, OSError):
        name = f": {exc.filename}" if exc.filename else ""
        return f": {exc.strerror or exc}{name}"
    if isinstance(exc, ValueError):
        return f": {exc}"
    return f": internal: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"


def report(exc: BaseException, code: int = 1) -> None:
    """Print ``exc`` as one line (or its traceback when debugging) and exit with ``code``."""
    if debugging():
        traceback.print_exception(exc, file=sys.stderr)
    else:
        _err.print(f"[red]error[/red]{escape(one_line(exc))}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


class ErrorGroup(TyperGroup):
    """The top-level group: a command's exception becomes ``report``'s one line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except _CLICK:
            raise  # typer's own usage errors keep their format and exit code
        except Exception as exc:
            report(exc)
