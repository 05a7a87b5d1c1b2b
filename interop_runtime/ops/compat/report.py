"""Compatibility reports: can two models (in any frameworks) exchange parameters?

``compare(a, b)`` takes two ModelGraphs and reports, from a's side to b's:

- structure: the compute ops of both aligned by normalized type (difflib on the
  type sequences; reshape-like and identity ops skipped), with differing attributes;
- parameters: pairs matched by aligned op and role, each with the transform that
  turns a's array into b's (``Step``s: transposes for weight layouts, and for a
  linear layer after a flattened image in another layout, a regrouping of its input
  axis); parameters left without a partner;
- inputs and outputs: shapes, dtypes and layouts, and whether they fit.

Pure data in, pydantic out; no framework and no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from math import prod
from typing import Any, Literal

from pydantic import BaseModel

from interop_runtime.ops.compat.modelgraph import (
    COUNTER_ROLES,
    PASSTHROUGH_TYPES,
    ModelGraph,
    OpInfo,
    ParamInfo,
    TensorInfo,
)

AUX_ROLES = COUNTER_ROLES | {"constant"}  # need no counterpart: nothing learned in them
# weight layout pairs -> transpose axes (new axis i = old axis axes[i])
_WEIGHT_AXES: dict[tuple[str, str], list[int]] = {
    ("out,in", "in,out"): [1, 0], ("in,out", "out,in"): [1, 0],
    ("OIHW", "HWIO"): [2, 3, 1, 0], ("HWIO", "OIHW"): [3, 2, 0, 1],
}
_DEFAULT_IMAGE_LAYOUT = {"torch": "NCHW", "onnx": "NCHW", "tensorflow": "NHWC"}
_COMPARED_ATTRS = ("in_features", "out_features", "in_channels", "out_channels", "kernel",
                   "stride", "padding", "dilation", "groups")


class Step(BaseModel):
    """One array transform. transpose: new axis i = old axis axes[i]. regroup: split
    axis ``dim`` into ``shape``, permute those sub-axes by ``axes``, merge them back."""

    op: Literal["transpose", "regroup"]
    axes: list[int]
    dim: int = 0
    shape: list[int] = []

    def describe(self) -> str:
        if self.op == "transpose":
            return f"transpose{tuple(self.axes)}"
        return f"regroup axis {self.dim} {tuple(self.shape)} -> {tuple(self.axes)}"

    def inverse(self) -> Step:
        back = [self.axes.index(i) for i in range(len(self.axes))]
        if self.op == "transpose":
            return Step(op="transpose", axes=back)
        return Step(op="regroup", axes=back, dim=self.dim, shape=[self.shape[i] for i in self.axes])

    def apply_shape(self, shape: list[int]) -> list[int]:
        if self.op == "transpose":
            return [shape[i] for i in self.axes]
        return list(shape)  # a regroup keeps the merged size


def invert(steps: list[Step]) -> list[Step]:
    return [s.inverse() for s in reversed(steps)]


def describe(steps: list[Step]) -> str:
    return " then ".join(s.describe() for s in steps) or "copy"


class OpBlock(BaseModel):
    """One block of the alignment (difflib's tags)."""

    tag: Literal["equal", "replace", "delete", "insert"]
    a: list[str]
    b: list[str]
    types_a: list[str]
    types_b: list[str]
    attr_diffs: list[str] = []


class ParamPair(BaseModel):
    a: str
    b: str
    role: str
    op_a: str | None
    op_b: str | None
    shape_a: list[int]
    shape_b: list[int]
    layout_a: str | None = None
    layout_b: str | None = None
    transform: list[Step] = []  # a's array -> b's
    ok: bool = True
    note: str | None = None


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
    structure_matches: bool
    alignment: list[OpBlock]
    params: list[ParamPair]
    unmatched_a: list[str]
    unmatched_b: list[str]
    ignored_a: list[str]  # counters and constants: nothing learned to transfer
    ignored_b: list[str]
    io: list[IOPair]
    verdict: Verdict
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
    params, unmatched_a, unmatched_b = _match_params(ga, gb, pairs_of_ops)
    ignored_a = [p.name for p in ga.params if p.role in AUX_ROLES]
    ignored_b = [p.name for p in gb.params if p.role in AUX_ROLES]
    io = _io(ga, gb)
    structure = all(blk.tag == "equal" for blk in blocks)
    reasons: list[str] = []
    warnings: list[str] = []
    reasons += [f"{p.a} -> {p.b}: {p.note}" for p in params if not p.ok]
    if unmatched_a:
        reasons.append(f"{len(unmatched_a)} parameter(s) of {name_a} have no partner: "
                       f"{', '.join(unmatched_a[:6])}")
    if unmatched_b:
        reasons.append(f"{len(unmatched_b)} parameter(s) of {name_b} have no partner: "
                       f"{', '.join(unmatched_b[:6])}")
    if not ga.params and not gb.params:
        reasons.append("neither model has parameters")
    for blk in blocks:
        if blk.tag != "equal":
            warnings.append(f"structure differs ({blk.tag}): {name_a} {blk.types_a or '-'} vs "
                            f"{name_b} {blk.types_b or '-'}")
        warnings += blk.attr_diffs
    warnings += [f"{p.kind} {p.a.name if p.a else '-'} / {p.b.name if p.b else '-'}: {p.note}"
                 for p in io if not p.fits]
    warnings += [f"{name_a}: {n}" for n in ga.notes] + [f"{name_b}: {n}" for n in gb.notes]
    compatible = not reasons
    equivalent = compatible and structure and not any(b.attr_diffs for b in blocks) \
        and all(p.fits for p in io)
    return CompatReport(
        a=name_a, b=name_b, framework_a=ga.framework, framework_b=gb.framework,
        structure_matches=structure, alignment=blocks, params=params,
        unmatched_a=unmatched_a, unmatched_b=unmatched_b, ignored_a=ignored_a,
        ignored_b=ignored_b, io=io,
        verdict=Verdict(compatible=compatible, equivalent=equivalent, reasons=reasons,
                        warnings=warnings), graph_a=ga, graph_b=gb)


# --- structure ------------------------------------------------------------------------

def _align(ga: ModelGraph, gb: ModelGraph) -> tuple[list[OpBlock], list[tuple[OpInfo, OpInfo]]]:
    ops_a, ops_b = ga.compute_ops(), gb.compute_ops()
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


# --- parameters -----------------------------------------------------------------------

def _match_params(ga: ModelGraph, gb: ModelGraph, paired: list[tuple[OpInfo, OpInfo]]
                  ) -> tuple[list[ParamPair], list[str], list[str]]:
    pa = {p.name: p for p in ga.params}
    pb = {p.name: p for p in gb.params}
    used_a: set[str] = set()
    used_b: set[str] = set()
    pairs: list[ParamPair] = []
    for oa, ob in paired:
        by_role_b: dict[str, list[ParamInfo]] = {}
        for name in ob.params:
            if name in pb and pb[name].role not in AUX_ROLES:
                by_role_b.setdefault(pb[name].role, []).append(pb[name])
        for name in oa.params:
            p = pa.get(name)
            if p is None or p.role in AUX_ROLES or not by_role_b.get(p.role):
                continue
            q = by_role_b[p.role].pop(0)
            pairs.append(_pair(p, q, oa, ob, ga, gb))
            used_a.add(p.name)
            used_b.add(q.name)
    unmatched_a = [p.name for p in ga.params if p.name not in used_a and p.role not in AUX_ROLES]
    unmatched_b = [p.name for p in gb.params if p.name not in used_b and p.role not in AUX_ROLES]
    return pairs, unmatched_a, unmatched_b


def _pair(p: ParamInfo, q: ParamInfo, oa: OpInfo, ob: OpInfo, ga: ModelGraph, gb: ModelGraph
          ) -> ParamPair:
    pair = ParamPair(a=p.name, b=q.name, role=p.role, op_a=oa.name, op_b=ob.name,
                     shape_a=p.shape, shape_b=q.shape, layout_a=p.layout, layout_b=q.layout)
    steps: list[Step] = []
    notes: list[str] = []
    if p.role == "weight" and oa.type == "linear" and len(p.shape) == 2:
        regroup = _flatten_regroup(p, q, oa, ob, ga, gb)
        if isinstance(regroup, str):
            pair.ok, pair.note = False, regroup
            return pair
        steps += regroup
    if p.role == "weight" and p.layout != q.layout:
        axes = _WEIGHT_AXES.get((p.layout or "", q.layout or ""))
        if axes is None and len(p.shape) == 2 and p.shape == q.shape[::-1] and p.shape != q.shape:
            axes = [1, 0]
            notes.append("a layout is unknown; transposed because the shapes are")
        if axes is None and p.shape != q.shape:
            pair.ok, pair.note = False, f"no known transform from layout {p.layout} to {q.layout}"
            return pair
        if axes is not None:
            steps.append(Step(op="transpose", axes=axes))
    shape = list(p.shape)
    for s in steps:
        shape = s.apply_shape(shape)
    pair.transform = steps
    if shape != list(q.shape):
        pair.ok = False
        notes.append(f"shape {p.shape} becomes {shape} but {q.name} is {q.shape}")
    pair.note = "; ".join(notes) or None
    return pair


def _image_before(op: OpInfo, g: ModelGraph) -> tuple[list[int] | None, str | None] | None:
    """(per-sample shape, layout) of the image a linear op's input was flattened from, or
    None when its input is not a flattened image (walks back through reshape-like ops)."""
    tensor = op.inputs[0] if op.inputs else None
    flattened = False
    for _ in range(32):  # a chain of views is short; this only bounds a malformed graph
        if tensor is None:
            return None
        info = g.tensors.get(tensor)
        if flattened and info is not None and info.shape is not None and len(info.shape) > 2:
            return ([int(d) if d is not None else -1 for d in info.shape[1:]], info.layout)
        producer = g.producer(tensor)
        if producer is None or producer.type not in PASSTHROUGH_TYPES:
            return ((None, None) if flattened else None)
        flattened = flattened or producer.type in ("flatten", "reshape")
        tensor = producer.inputs[0] if producer.inputs else None
    return None


def _image_layout(g: ModelGraph, known: str | None) -> str | None:
    if known:
        return known
    for t in g.inputs:
        if t.layout:
            return t.layout
    return _DEFAULT_IMAGE_LAYOUT.get(g.framework)


def _flatten_regroup(p: ParamInfo, q: ParamInfo, oa: OpInfo, ob: OpInfo, ga: ModelGraph,
                     gb: ModelGraph) -> list[Step] | str:
    """Steps that reorder a linear weight's input axis when it reads an image flattened
    in another layout (NHWC vs NCHW): [] when no reorder is needed, a reason if unknown."""
    ia, ib = _image_before(oa, ga), _image_before(ob, gb)
    if ia is None and ib is None:
        return []
    shape_a, la = ia or (None, None)
    shape_b, lb = ib or (None, None)
    if any(s is not None and len(s) != 3 for s in (shape_a, shape_b)):
        return []  # not an image (a sequence, a matrix): flattening it has one order
    la, lb = _image_layout(ga, la), _image_layout(gb, lb)
    if la == lb:
        return []
    if not (la and lb) or sorted(la) != sorted(lb) or len(la) != 4:
        return f"flattened image layouts {la} vs {lb}: no known row permutation"
    letters_a, letters_b = la[1:], lb[1:]  # per sample, e.g. HWC and CHW
    if shape_a is None and shape_b is not None:
        shape_a = [shape_b[letters_b.index(ch)] for ch in letters_a]
    if shape_a is None or len(shape_a) != 3 or min(shape_a) < 1:
        return (f"a flattened {la} image feeds this layer but its shape is unknown, so the "
                "row permutation for the other layout cannot be computed")
    in_axis = 0 if p.layout == "in,out" else 1
    if prod(shape_a) != p.shape[in_axis]:
        return f"flattened image {shape_a} does not have the {p.shape[in_axis]} features"
    axes = [letters_a.index(ch) for ch in letters_b]
    return [Step(op="regroup", dim=in_axis, shape=shape_a, axes=axes)]


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
        la, lb = _image_layout(ga, ta.layout), _image_layout(gb, tb.layout)
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
