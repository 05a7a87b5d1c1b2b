"""Parameter pairs between two models, and how each was found.

Three ways, best first:

- ``structure``: both are transformers (attention ops). Ops pair by the part they play
  (``blocks.structural_keys``: embed.token, block0.attn.out, block1.norm.pre_attn, ...),
  never by position, so a pre-norm model's LayerNorms do not pair with a post-norm one's.
- ``alignment``: ops aligned by normalized type (difflib on the type sequences), as for
  MLPs and CNNs whose layers line up one to one.
- ``name``: one side has no structure (a graph that could not be read): parameters pair
  by name (exact, then after a common prefix) and shape, and the report says so.

Within a pair of ops, parameters pair by role (weight, bias, gamma, ...); a pair whose
shapes differ after the layout transform is refused (``ok`` False), never copied.
"""

from __future__ import annotations

from math import prod
from typing import Literal

from interop_runtime.ops.compat.modelgraph import PASSTHROUGH_TYPES, ModelGraph, OpInfo, ParamInfo
from interop_runtime.ops.compat.steps import (
    AUX_ROLES,
    WEIGHT_AXES,
    ParamPair,
    Step,
    image_layout,
)

Method = Literal["structure", "alignment", "name"]


def match_params(ga: ModelGraph, gb: ModelGraph, aligned: list[tuple[OpInfo, OpInfo]],
                 keys_a: dict[str, str], keys_b: dict[str, str]
                 ) -> tuple[list[ParamPair], list[str], list[str], Method]:
    """(pairs, unmatched in a, unmatched in b, method): learned parameters only."""
    if not ga.ops or not gb.ops:
        method: Method = "name"
        pairs = _by_name(ga, gb)
    elif keys_a and keys_b:
        method = "structure"
        by_key_b = {k: gb.op(n) for n, k in keys_b.items()}
        ops = [(oa, ob) for n, k in keys_a.items()
               if (oa := ga.op(n)) is not None and (ob := by_key_b.get(k)) is not None]
        pairs = _by_ops(ga, gb, ops)
    else:
        method = "alignment"
        pairs = _by_ops(ga, gb, aligned)
    used_a, used_b = {p.a for p in pairs}, {p.b for p in pairs}
    unmatched_a = [p.name for p in ga.params if p.name not in used_a and p.role not in AUX_ROLES]
    unmatched_b = [p.name for p in gb.params if p.name not in used_b and p.role not in AUX_ROLES]
    return pairs, unmatched_a, unmatched_b, method


def _by_ops(ga: ModelGraph, gb: ModelGraph, paired: list[tuple[OpInfo, OpInfo]]
            ) -> list[ParamPair]:
    pa = {p.name: p for p in ga.params}
    pb = {p.name: p for p in gb.params}
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
            pairs.append(_pair(p, by_role_b[p.role].pop(0), oa, ob, ga, gb))
    return pairs


def _common_prefix(names: list[str]) -> str:
    """A shared leading module path ('model.', 'bert.') to ignore when names are compared."""
    if len(names) < 2:
        return ""
    first = names[0].split(".")[0] + "."
    return first if all(n.startswith(first) for n in names) else ""


def _by_name(ga: ModelGraph, gb: ModelGraph) -> list[ParamPair]:
    learned_a = [p for p in ga.params if p.role not in AUX_ROLES]
    learned_b = [p for p in gb.params if p.role not in AUX_ROLES]
    cut_a = _common_prefix([p.name for p in learned_a])
    cut_b = _common_prefix([p.name for p in learned_b])
    by_name = {p.name: p for p in learned_b}
    by_short = {p.name.removeprefix(cut_b): p for p in learned_b}
    pairs: list[ParamPair] = []
    used: set[str] = set()
    for p in learned_a:
        q = by_name.get(p.name) or by_short.get(p.name.removeprefix(cut_a))
        if q is None or q.name in used:
            continue
        used.add(q.name)
        pair = ParamPair(a=p.name, b=q.name, role=p.role, op_a=p.op, op_b=q.op, shape_a=p.shape,
                         shape_b=q.shape, layout_a=p.layout, layout_b=q.layout,
                         note="matched by name and shape (no structure to match by)")
        if p.shape != q.shape:
            pair.ok = False
            pair.note = f"same name, but shape {p.shape} vs {q.shape}"
        pairs.append(pair)
    return pairs


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
        axes = WEIGHT_AXES.get((p.layout or "", q.layout or ""))
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
    la, lb = image_layout(ga, la), image_layout(gb, lb)
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
