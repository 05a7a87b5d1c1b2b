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


def summary_lines(r: CompatReport) -> list[str]:
    """The short part, first on screen: verdict, top reasons, what could still be copied."""
    v, s = r.verdict, r.summary
    if v.compatible:
        head = "[green]compatible for parameter transfer[/green]" + (
            " and equivalent" if v.equivalent else " (but the models compute differently)")
    else:
        head = "[red]not compatible for parameter transfer[/red]"
    how = {"structure": "paired by structural role", "alignment": "paired by aligned ops",
           "name": "paired by name and shape only"}[s.matched_by]
    lines = [f"verdict: {head} [dim](structure {s.structure}; {how})[/dim]"]
    mark = "[yellow]![/yellow]" if v.compatible else "[red]✗[/red]"
    lines += [f"  {mark} {escape(x)}" for x in s.reasons]
    lines.append(f"could copy {escape(r.a)} -> {escape(r.b)}: {s.copyable} of {s.params_b} "
                 f"parameters ({s.fraction:.1%} of the elements); {s.refused} pair(s) refused")
    return lines


def report_view(r: CompatReport, *, detail: bool = True) -> RenderableType:
    """Summary first; then the detail: structure (bookkeeping collapsed), parameters, I/O."""
    head = "\n".join(summary_lines(r))
    return Group(head, detail_view(r)) if detail else head


def detail_view(r: CompatReport) -> RenderableType:
    a, b = escape(r.a), escape(r.b)
    structure = Table("", f"{a} ({r.framework_a})", f"{b} ({r.framework_b})",
                      title="structure (significant ops, aligned by type)",
                      caption=f"bookkeeping ops collapsed: {r.collapsed_a} in {a}, "
                              f"{r.collapsed_b} in {b}")
    for blk in r.alignment:
        mark = {"equal": "[green]=[/green]", "replace": "[red]≠[/red]",
                "delete": f"[red]only {a}[/red]", "insert": f"[red]only {b}[/red]"}[blk.tag]
        for i in range(max(len(blk.a), len(blk.b))):
            structure.add_row(mark, _op(r.roles_a, blk.a, blk.types_a, i),
                              _op(r.roles_b, blk.b, blk.types_b, i))
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
    lines = [f"  [yellow]![/yellow] {escape(x)}" for x in r.verdict.warnings[:20]]
    if len(r.verdict.warnings) > 20:
        lines.append(f"  [dim]... {len(r.verdict.warnings) - 20} more: --json has them all[/dim]")
    return Group(structure, params, io, *(["\n".join(lines)] if lines else []))


def _op(roles: dict[str, str], names: list[str], types: list[str], i: int) -> str:
    if i >= len(names):
        return ""
    role = roles.get(names[i])
    return f"{escape(names[i])} [dim]{types[i]}{' ' + role if role else ''}[/dim]"
