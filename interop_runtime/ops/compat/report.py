"""Compatibility reports: can two models (in any frameworks) exchange parameters?

``compare(a, b)`` takes two ModelGraphs and reports, from a's side to b's:

- summary (summary.py): the verdict, its top reasons (vocabulary, hidden size, depth,
  heads, position scheme) and how much of b a copy from a would write;
- structure: the significant ops of both (known compute types and ops holding
  parameters) aligned by normalized type, with differing attributes; bookkeeping ops
  (sizes, masks, position ids) are only counted. No graph on a side: unknown, never a match;
- parameters (matching.py): pairs by structural role (transformers), by aligned op, or
  by name and shape, each with the transform that turns a's array into b's (``Step``s:
  transposes for weight layouts, a regrouping after a flattened image in another layout);
  parameters left without a partner;
- inputs and outputs: shapes, dtypes and layouts, and whether they fit.

Pure data in, pydantic out; no framework and no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

from interop_runtime.ops.compat.blocks import Profile, profile, structural_keys
from interop_runtime.ops.compat.matching import match_params
from interop_runtime.ops.compat.modelgraph import ModelGraph, OpInfo, TensorInfo
from interop_runtime.ops.compat.steps import (
    AUX_ROLES,
    ParamPair,
    Step,
    describe,
    image_layout,
    invert,
)
from interop_runtime.ops.compat.summary import Summary, summarize

__all__ = ["CompatReport", "IOPair", "OpBlock", "ParamPair", "Step", "Verdict", "compare",
           "describe", "explicit_padding", "invert"]

_COMPARED_ATTRS = ("in_features", "out_features", "in_channels", "out_channels", "kernel",
                   "stride", "padding", "dilation", "groups", "num_embeddings", "embedding_dim",
                   "heads", "head_dim")


class OpBlock(BaseModel):
    """One block of the alignment (difflib's tags)."""

    tag: Literal["equal", "replace", "delete", "insert"]
    a: list[str]
    b: list[str]
    types_a: list[str]
    types_b: list[str]
    attr_diffs: list[str] = []


class IOPair(BaseModel):
    kind: Literal["input", "output"]
    a: TensorInfo | None
    b: TensorInfo | None
    fits: bool
    transpose: list[int] | None = None  # a's tensor -> b's, when the layouts differ
    note: str | None = None


class Verdict(BaseModel):
    compatible: bool  # every learned parameter on both sides has a partner it fits
    equivalent: bool  # ...and the same computation: after a copy, the same outputs
    reasons: list[str] = []
    warnings: list[str] = []


class CompatReport(BaseModel):
    a: str
    b: str
    framework_a: str
    framework_b: str
    structure_matches: bool | None  # None: a structure could not be read (never a match)
    alignment: list[OpBlock]  # significant ops only; bookkeeping is counted in collapsed_*
    params: list[ParamPair]
    unmatched_a: list[str]
    unmatched_b: list[str]
    ignored_a: list[str]  # counters and constants: nothing learned to transfer
    ignored_b: list[str]
    io: list[IOPair]
    verdict: Verdict
    summary: Summary
    profile_a: Profile
    profile_b: Profile
    roles_a: dict[str, str] = {}  # op name -> structural role (transformers)
    roles_b: dict[str, str] = {}
    collapsed_a: int = 0  # bookkeeping ops (sizes, masks, position ids) left out of alignment
    collapsed_b: int = 0
    graph_a: ModelGraph
    graph_b: ModelGraph

    def to_json(self, indent: int | None = 2, *, graphs: bool = False) -> str:
        """JSON; the two graphs are left out unless asked for (they can be large)."""
        exclude = None if graphs else {"graph_a", "graph_b"}
        return self.model_dump_json(indent=indent, exclude=exclude)


def _graph(g: ModelGraph | Mapping[str, Any]) -> ModelGraph:
    return g if isinstance(g, ModelGraph) else ModelGraph.model_validate(g)


def compare(a: ModelGraph | Mapping[str, Any], b: ModelGraph | Mapping[str, Any],
            name_a: str = "a", name_b: str = "b") -> CompatReport:
    ga, gb = _graph(a), _graph(b)
    blocks, pairs_of_ops = _align(ga, gb)
    keys_a, keys_b = structural_keys(ga), structural_keys(gb)
    params, unmatched_a, unmatched_b, method = match_params(ga, gb, pairs_of_ops, keys_a, keys_b)
    ignored_a = [p.name for p in ga.params if p.role in AUX_ROLES]
    ignored_b = [p.name for p in gb.params if p.role in AUX_ROLES]
    io = _io(ga, gb)
    known = bool(ga.ops) and bool(gb.ops)
    structure = all(blk.tag == "equal" for blk in blocks) if known else None
    prof_a, prof_b = profile(ga, keys_a), profile(gb, keys_b)
    summary = summarize(ga, gb, name_a, name_b, profiles=(prof_a, prof_b),
                        structure="unknown" if structure is None else
                        "match" if structure else "differ",
                        matched_by=method, pairs=params, unmatched_a=unmatched_a,
                        unmatched_b=unmatched_b)
    warnings: list[str] = []
    for blk in blocks:
        if blk.tag != "equal":
            warnings.append(f"structure differs ({blk.tag}): {name_a} {blk.types_a or '-'} vs "
                            f"{name_b} {blk.types_b or '-'}")
        warnings += blk.attr_diffs
    warnings += [f"{p.kind} {p.a.name if p.a else '-'} / {p.b.name if p.b else '-'}: {p.note}"
                 for p in io if not p.fits]
    warnings += [f"{name_a}: {n}" for n in ga.notes] + [f"{name_b}: {n}" for n in gb.notes]
    compatible = summary.verdict == "compatible"
    equivalent = compatible and bool(structure) and not any(b.attr_diffs for b in blocks) \
        and all(p.fits for p in io)
    reasons = [] if compatible else summary.reasons
    return CompatReport(
        a=name_a, b=name_b, framework_a=ga.framework, framework_b=gb.framework,
        structure_matches=structure, alignment=blocks, params=params,
        unmatched_a=unmatched_a, unmatched_b=unmatched_b, ignored_a=ignored_a,
        ignored_b=ignored_b, io=io, summary=summary, profile_a=prof_a,
        profile_b=prof_b, roles_a=keys_a, roles_b=keys_b,
        collapsed_a=len(ga.compute_ops()) - len(ga.significant_ops()),
        collapsed_b=len(gb.compute_ops()) - len(gb.significant_ops()),
        verdict=Verdict(compatible=compatible, equivalent=equivalent, reasons=reasons,
                        warnings=warnings), graph_a=ga, graph_b=gb)


# --- structure ------------------------------------------------------------------------

def _align(ga: ModelGraph, gb: ModelGraph) -> tuple[list[OpBlock], list[tuple[OpInfo, OpInfo]]]:
    ops_a, ops_b = ga.significant_ops(), gb.significant_ops()
    types_a, types_b = [o.type for o in ops_a], [o.type for o in ops_b]
    matcher = difflib.SequenceMatcher(None, types_a, types_b, autojunk=False)
    blocks: list[OpBlock] = []
    paired: list[tuple[OpInfo, OpInfo]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        blk = OpBlock(tag=tag, a=[o.name for o in ops_a[i1:i2]], b=[o.name for o in ops_b[j1:j2]],
                      types_a=types_a[i1:i2], types_b=types_b[j1:j2])
        if tag == "equal":
            for oa, ob in zip(ops_a[i1:i2], ops_b[j1:j2]):
                paired.append((oa, ob))
                blk.attr_diffs += _attr_diffs(oa, ob)
        blocks.append(blk)
    return blocks, paired


def explicit_padding(attrs: Mapping[str, Any]) -> Any:
    """'valid' / 'same' as per-dimension pads where they are symmetric (stride 1, odd
    effective kernel), so a Keras 'same' 3x3 compares equal to torch's padding=1."""
    padding = attrs.get("padding")
    kernel = attrs.get("kernel") or []
    if padding == "valid":
        return [0] * len(kernel)
    if padding == "same":
        stride = attrs.get("stride") or [1] * len(kernel)
        dilation = attrs.get("dilation") or [1] * len(kernel)
        eff = [(k - 1) * d for k, d in zip(kernel, dilation)]
        if all(s == 1 for s in stride) and all(e % 2 == 0 for e in eff):
            return [e // 2 for e in eff]
    return padding


def _attr_diffs(oa: OpInfo, ob: OpInfo) -> list[str]:
    diffs = []
    for key in _COMPARED_ATTRS:
        if key not in oa.attrs or key not in ob.attrs:
            continue
        va, vb = oa.attrs[key], ob.attrs[key]
        if key == "padding":
            va, vb = explicit_padding(oa.attrs), explicit_padding(ob.attrs)
        if _norm(va) != _norm(vb):
            diffs.append(f"{oa.name} / {ob.name}: {key} {va} vs {vb}")
    ea, eb = oa.attrs.get("eps"), ob.attrs.get("eps")
    if ea is not None and eb is not None and abs(ea - eb) > 1e-9 * max(abs(ea), abs(eb)):
        diffs.append(f"{oa.name} / {ob.name}: batch-norm eps {ea:g} vs {eb:g} "
                     "(outputs will differ slightly)")
    return diffs


def _norm(value: Any) -> Any:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else value


# --- inputs and outputs -----------------------------------------------------------------

def _io(ga: ModelGraph, gb: ModelGraph) -> list[IOPair]:
    out: list[IOPair] = []
    for kind, xs, ys in (("input", ga.inputs, gb.inputs), ("output", ga.outputs, gb.outputs)):
        for i in range(max(len(xs), len(ys))):
            ta = xs[i] if i < len(xs) else None
            tb = ys[i] if i < len(ys) else None
            out.append(_io_pair(kind, ta, tb, ga, gb))
    return out


def _io_pair(kind: Literal["input", "output"], ta: TensorInfo | None, tb: TensorInfo | None,
             ga: ModelGraph, gb: ModelGraph) -> IOPair:
    if ta is None or tb is None:
        return IOPair(kind=kind, a=ta, b=tb, fits=False, note=f"only one model has this {kind}")
    notes: list[str] = []
    fits = True
    if ta.dtype and tb.dtype and ta.dtype != tb.dtype:
        fits = False
        notes.append(f"dtype {ta.dtype} vs {tb.dtype}")
    transpose = None
    shape_a = ta.shape
    if ta.shape is not None and len(ta.shape) == 4:
        la, lb = image_layout(ga, ta.layout), image_layout(gb, tb.layout)
        if la and lb and la != lb and sorted(la) == sorted(lb):
            transpose = [la.index(ch) for ch in lb]
            shape_a = [ta.shape[i] for i in transpose]
            notes.append(f"{la} -> {lb}: transpose{tuple(transpose)}")
    if shape_a is not None and tb.shape is not None:
        same_rank = len(shape_a) == len(tb.shape)
        if not same_rank or any(x is not None and y is not None and x != y
                                for x, y in zip(shape_a, tb.shape)):
            fits = False
            notes.append(f"shape {ta.shape} vs {tb.shape}")
    return IOPair(kind=kind, a=ta, b=tb, fits=fits, transpose=transpose,
                  note="; ".join(notes) or None)
