"""A CompatReport as rich tables, for the terminal (``interop compat``)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table

from interop_runtime.ops.compat.modelgraph import TensorInfo
from interop_runtime.ops.compat.report import CompatReport, describe


def _shape(shape: list[int | None] | None) -> str:
    return "any" if shape is None else "(" + ", ".join("?" if d is None else str(d)
                                                       for d in shape) + ")"


def _param(name: str, shape: list[int]) -> str:
    return f"{escape(name)} [dim]{'×'.join(map(str, shape)) or 'scalar'}[/dim]"


def _tensor(t: TensorInfo | None) -> str:
    if t is None:
        return "[red]none[/red]"
    return f"{escape(t.name)} {t.dtype or 'any'} {_shape(t.shape)}{' ' + t.layout if t.layout else ''}"


def report_view(r: CompatReport) -> RenderableType:
    a, b = escape(r.a), escape(r.b)
    structure = Table("", f"{a} ({r.framework_a})", f"{b} ({r.framework_b})",
                      title="structure (compute ops, aligned by type)")
    for blk in r.alignment:
        mark = {"equal": "[green]=[/green]", "replace": "[red]≠[/red]",
                "delete": f"[red]only {a}[/red]", "insert": f"[red]only {b}[/red]"}[blk.tag]
        rows = max(len(blk.a), len(blk.b))
        for i in range(rows):
            left = f"{blk.a[i]} [dim]{blk.types_a[i]}[/dim]" if i < len(blk.a) else ""
            right = f"{blk.b[i]} [dim]{blk.types_b[i]}[/dim]" if i < len(blk.b) else ""
            structure.add_row(mark, left, right)
    params = Table(a, b, "transform a -> b", title="parameters")
    for p in r.params:
        how = describe(p.transform) if p.ok else f"[red]✗ {escape(p.note or 'does not fit')}[/red]"
        params.add_row(_param(p.a, p.shape_a), _param(p.b, p.shape_b), how)
    for name in r.unmatched_a:
        params.add_row(escape(name), "[red]none[/red]", "[red]unmatched[/red]")
    for name in r.unmatched_b:
        params.add_row("[red]none[/red]", escape(name), "[red]unmatched[/red]")
    for name in r.ignored_a:
        params.add_row(escape(name), "", "[dim]nothing learned: skipped[/dim]")
    for name in r.ignored_b:
        params.add_row("", escape(name), "[dim]nothing learned: skipped[/dim]")
    io = Table("", f"{a}", f"{b}", "fits", title="inputs and outputs")
    for p in r.io:
        fits = "[green]yes[/green]" if p.fits else "[red]no[/red]"
        io.add_row(p.kind, _tensor(p.a), _tensor(p.b),
                   fits + (f" ({escape(p.note)})" if p.note else ""))
    v = r.verdict
    if v.compatible:
        head = "[green]compatible for parameter transfer[/green]" + (
            " and equivalent" if v.equivalent else " (but the models compute differently)")
    else:
        head = "[red]not compatible for parameter transfer[/red]"
    lines = [f"verdict: {head}"]
    lines += [f"  [red]✗[/red] {escape(x)}" for x in v.reasons]
    lines += [f"  [yellow]![/yellow] {escape(x)}" for x in v.warnings]
    return Group(structure, params, io, "\n".join(lines))
