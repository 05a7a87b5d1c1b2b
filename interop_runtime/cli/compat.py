"""`interop compat` and `interop copy-params`: compare two workers' models across frameworks
and copy parameters between them (registered by app.py).

No `from __future__ import annotations`: typer reads the option types at runtime.
"""

from enum import StrEnum
from typing import Annotated

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
        brief: Annotated[bool, typer.Option("--brief", help="Only the summary: verdict, "
                                                            "reasons, what could be copied.")
                         ] = False,
        timeout: Annotated[float, typer.Option("--timeout", help="Request timeout (s).")] = 60.0,
        key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None,
    ) -> None:
        """Compare two workers' models: a summary (verdict, reasons such as vocabulary,
        hidden size, depth, heads and position scheme; what could still be copied), then
        structure, parameter transforms, inputs and outputs.

        Exits with 4 when parameters cannot be copied between them."""
        from interop_runtime.ops.compat.render import to_dot, to_mermaid
        from interop_runtime.ops.compat.view import detail_view, report_view

        with client_session(coordinator, key, coordinator_key, timeout) as c:
            report = compare_workers(c, worker_a, worker_b)
        if json_out:
            print(report.to_json(graphs=graphs))
        elif draw:
            render = to_dot if draw == DrawFormat.dot else to_mermaid
            print(render(report.graph_a) + "\n" + render(report.graph_b), end="")
        else:
            console.print(report_view(report, detail=False), soft_wrap=True)  # one line each
            if not brief:
                console.print(detail_view(report))
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
        min_fraction: Annotated[float | None, typer.Option(
            "--min-fraction", min=0.0, max=1.0,
            help="With --partial: the least share of the destination's learned parameter "
                 "elements the copy must write, else nothing is written and it exits 1 "
                 "(default 0.5).")] = None,
        timeout: Annotated[float, typer.Option("--timeout", help="Request timeout (s).")] = 60.0,
        key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None,
    ) -> None:
        """Copy parameters into another worker's model, across frameworks.

        Weights are transposed and reordered for the destination's layouts. Prints the
        pairs copied and refused."""
        from interop_runtime.cli.common import fail
        from interop_runtime.ops.params.mapping import copy_params_detailed

        if min_fraction is not None and not partial:
            fail("--min-fraction applies only with --partial", code=2)
        with client_session(coordinator, key, coordinator_key, timeout) as c:
            result = copy_params_detailed(c, src, dst, strict=not partial,
                                          min_fraction=min_fraction)
        for line in result.refused:
            console.print(f"  [red]refused[/red] {escape(line)}", soft_wrap=True)
        if result.unmatched:
            console.print(f"  {len(result.unmatched)} parameter(s) of {escape(dst)} left as they "
                          "were (no partner)", soft_wrap=True)
        console.print(f"copied {len(result.copied)} parameter(s) {escape(src)} -> {escape(dst)} "
                      f"({result.fraction:.1%} of its elements), {len(result.refused)} pair(s) "
                      f"refused; {escape(dst)} is now at version {result.version}", soft_wrap=True)
