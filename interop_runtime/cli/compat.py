"""`interop compat` and `interop copy-params`: compare two workers' models across frameworks
and copy parameters between them (registered by app.py).

No `from __future__ import annotations`: typer reads the option types at runtime.
"""

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    client_session,
    console,
)
from interop_runtime.ops.compat.live import compare_workers


class DrawFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""

    @app.command("compat")
    def compat(
        worker_a: Annotated[str, typer.Argument(help="First worker.")],
        worker_b: Annotated[str, typer.Argument(help="Second worker.")],
        coordinator: CoordOpt = DEFAULT_ADDRESS,
        json_out: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
        graphs: Annotated[bool, typer.Option("--graphs", help="With --json: include both "
                                                              "neutral graphs.")] = False,
        draw: Annotated[DrawFormat | None, typer.Option(
            "--draw", case_sensitive=False,
            help="Print both neutral graphs as mermaid or dot.")] = None,
        timeout: Annotated[float, typer.Option("--timeout", help="Request timeout (s).")] = 60.0,
        key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None,
    ) -> None:
        """Compare two workers' models: structure, parameter transforms, inputs and outputs.

        Exits with 4 when parameters cannot be copied between them."""
        from interop_runtime.ops.compat.render import to_dot, to_mermaid
        from interop_runtime.ops.compat.view import report_view

        with client_session(coordinator, key, coordinator_key, timeout) as c:
            report = compare_workers(c, worker_a, worker_b)
        if json_out:
            print(report.to_json(graphs=graphs))
        elif draw:
            render = to_dot if draw == DrawFormat.dot else to_mermaid
            print(render(report.graph_a) + "\n" + render(report.graph_b), end="")
        else:
            console.print(report_view(report))
        if not report.verdict.compatible:
            raise typer.Exit(4)

    @app.command("copy-params")
    def copy_params(
        src: Annotated[str, typer.Argument(help="Worker to read parameters from.")],
        dst: Annotated[str, typer.Argument(help="Worker to write them into.")],
        coordinator: CoordOpt = DEFAULT_ADDRESS,
        partial: Annotated[bool, typer.Option("--partial", help="Copy the pairs that fit even "
                                                                "when some parameters have no "
                                                                "partner.")] = False,
        timeout: Annotated[float, typer.Option("--timeout", help="Request timeout (s).")] = 60.0,
        key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None,
    ) -> None:
        """Copy parameters into another worker's model, across frameworks.

        Weights are transposed and reordered for the destination's layouts."""
        from interop_runtime.ops.params.mapping import build_mapping
        from interop_runtime.ops.params.mapping import copy_params as copy

        def run(c: Any) -> tuple[int, int]:
            report = compare_workers(c, src, dst)
            count = len(build_mapping(report, strict=not partial))
            return count, copy(c, src, dst, strict=not partial, report=report)

        with client_session(coordinator, key, coordinator_key, timeout) as c:
            count, version = run(c)
        console.print(f"copied {count} parameter(s) {escape(src)} -> {escape(dst)}; "
                      f"{escape(dst)} is now at version {version}")
