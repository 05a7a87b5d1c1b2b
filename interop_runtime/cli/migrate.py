"""`interop migrate WORKER --to onnx --out model.onnx`: export a worker's model to ONNX,
serve it on a temporary onnxruntime worker, and print the parity report (registered by
app.py). With `--back-to torch` the file is also loaded into a temporary torch worker and
the report has a row per direction (torch -> onnx, onnx -> torch, torch -> torch). Exit codes: 0 parity passes, 1 parity fails, 2 the migration itself failed."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    connect,
    console,
)

PARITY_FAILED = 1
MIGRATION_FAILED = 2


class Target(StrEnum):
    onnx = "onnx"


def register(app: typer.Typer) -> None:
    """Add the `migrate` command to the main app."""

    @app.command()
    def migrate(
        worker: Annotated[str, typer.Argument(help="The worker whose model to migrate "
                                                   "(started with `export: true`).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Where the .onnx file goes.")],
        to: Annotated[Target, typer.Option("--to", case_sensitive=False,
                                           help="Target format (onnx).")] = Target.onnx,
        function: Annotated[str, typer.Option("--function", help="The function to compare.")] =
            "forward",
        batch: Annotated[int, typer.Option("--batch", help="Size of dynamic dims in the "
                                                           "generated inputs.")] = 2,
        opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default: the "
                                                                  "exporter's).")] = None,
        rtol: Annotated[float, typer.Option("--rtol", help="Relative tolerance.")] = 1e-3,
        atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance.")] = 1e-5,
        target: Annotated[str | None, typer.Option(
            "--target", help="An onnxruntime worker already serving --out (default: start a "
                             "temporary one; needed on CURVE clusters).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the generated inputs.")] = 0,
        back_to: Annotated[str | None, typer.Option(
            "--back-to", help="Also load the ONNX file back into this framework (torch) on "
                              "a temporary worker; the report shows each direction.")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
        coordinator: CoordOpt = DEFAULT_ADDRESS,
        key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None,
        timeout: Annotated[float, typer.Option("--timeout", help="Per-request timeout (s); "
                                                                 "exports can be slow.")] = 300.0,
    ) -> None:
        """Export WORKER's model to ONNX and check the copy against the original."""
        from interop_runtime.cli.errors import CliError
        from interop_runtime.ops.migration.migrate import migrate as run_migration
        from interop_runtime.ops.migration.migrate import roundtrip
        from interop_runtime.ops.migration.parity import MigrationReport, ParityReport, Tolerance
        from interop_runtime.wire.errors import InteropError

        tolerance = Tolerance(rtol=rtol, atol=atol)
        report: ParityReport | MigrationReport
        try:
            with connect(coordinator, key, coordinator_key, timeout) as c:
                if back_to is not None:
                    if target is not None:
                        raise CliError("--target and --back-to do not go together: a round "
                                       "trip starts its own workers")
                    report = roundtrip(c, worker, out, back_to=back_to, function=function,
                                       opset=opset, batch=batch, seed=seed, timeout_s=timeout,
                                       tolerance=tolerance)
                else:
                    report = run_migration(c, worker, out, function=function,
                                           target_worker=target, opset=opset, batch=batch,
                                           seed=seed, timeout_s=timeout, tolerance=tolerance)
        except (InteropError, CliError, ValueError, OSError) as exc:
            console.print(f"[red]migration failed:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(MIGRATION_FAILED) from None
        if json_out:
            print(report.to_json())
        else:
            console.print(report.table())
            console.print(f"{escape(report.onnx_path or '')}: {report.onnx_bytes} bytes, "
                          f"exporter {escape(report.exporter or '?')}, opset {report.opset}",
                          soft_wrap=True)
            for note in report.notes:
                console.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
        if not report.passed:
            raise typer.Exit(PARITY_FAILED)
