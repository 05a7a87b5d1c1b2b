"""The short part of a compatibility report: the verdict, its top reasons in the terms a
person thinks in (vocabulary, hidden size, depth, heads, position scheme, norm
placement), and what could still be copied. Pure data in, pydantic out."""

from __future__ import annotations

from math import prod
from typing import Literal

from pydantic import BaseModel

from interop_runtime.ops.compat.blocks import Profile
from interop_runtime.ops.compat.modelgraph import ModelGraph
from interop_runtime.ops.compat.steps import AUX_ROLES, ParamPair

MAX_REASONS = 8  # the summary stays short; the detail lists everything


class Summary(BaseModel):
    verdict: Literal["compatible", "incompatible"]
    structure: Literal["match", "differ", "unknown"]
    matched_by: Literal["structure", "alignment", "name"]
    reasons: list[str] = []
    copyable: int = 0  # parameter pairs that fit (after their transforms)
    refused: int = 0  # pairs found but refused (shapes differ after the transforms)
    params_b: int = 0  # learned parameters of b, the copy's destination
    elements_b: int = 0
    copyable_elements_b: int = 0

    @property
    def fraction(self) -> float:
        """Share of b's learned parameter elements that a copy from a would write."""
        return self.copyable_elements_b / self.elements_b if self.elements_b else 0.0


def _fields(pa: Profile, pb: Profile) -> list[tuple[str, object, object]]:
    return [("vocabulary", pa.vocabulary, pb.vocabulary), ("hidden size", pa.hidden, pb.hidden),
            ("depth (attention blocks)", pa.depth, pb.depth), ("attention heads", pa.heads, pb.heads),
            ("position scheme", pa.position, pb.position), ("norm placement", pa.norm, pb.norm),
            ("MLP width", pa.mlp, pb.mlp)]


def profile_reasons(pa: Profile, pb: Profile, a: str, b: str) -> list[str]:
    """What differs between two transformers' structures, most telling first."""
    if pa.transformer != pb.transformer:
        which, other = (a, b) if pa.transformer else (b, a)
        return [f"{which} is a transformer (attention blocks); {other} has no attention"]
    if not pa.transformer:
        return []
    out = [f"{what} {x} vs {y}" for what, x, y in _fields(pa, pb)
           if x is not None and y is not None and x != y]
    for name, p in ((a, pa), (b, pb)):
        if p.heads is None:
            out.append(f"attention heads of {name}: {p.heads_note}")
    if pa.fused_qkv != pb.fused_qkv:
        fused = a if pa.fused_qkv else b
        out.append(f"attention projections: {fused} has one fused q/k/v projection, the other "
                   "separate q, k and v")
    return out


def summarize(ga: ModelGraph, gb: ModelGraph, a: str, b: str, *, profiles: tuple[Profile, Profile],
              structure: Literal["match", "differ", "unknown"],
              matched_by: Literal["structure", "alignment", "name"], pairs: list[ParamPair],
              unmatched_a: list[str], unmatched_b: list[str]) -> Summary:
    refused = [p for p in pairs if not p.ok]
    compatible = not refused and not unmatched_a and not unmatched_b and bool(pairs)
    reasons = profile_reasons(*profiles, a, b) if not compatible else []
    if structure == "unknown":
        blind = [n for n, g in ((a, ga), (b, gb)) if not g.ops]
        reasons.append(f"structure unknown for {', '.join(blind)}: parameters matched by name "
                       "and shape only")
    if not compatible:
        reasons += [f"{p.a} -> {p.b}: {p.note}" for p in refused[:3]]
        for name, missing in ((a, unmatched_a), (b, unmatched_b)):
            if missing:
                reasons.append(f"{len(missing)} parameter(s) of {name} have no partner: "
                               f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if not ga.params and not gb.params:
            reasons.append("neither model has parameters")
    learned_b = [p for p in gb.params if p.role not in AUX_ROLES]
    ok_b = {p.b for p in pairs if p.ok}
    return Summary(
        verdict="compatible" if compatible else "incompatible", structure=structure,
        matched_by=matched_by, reasons=reasons[:MAX_REASONS], copyable=len(ok_b),
        refused=len(refused), params_b=len(learned_b),
        elements_b=sum(prod(p.shape) for p in learned_b),
        copyable_elements_b=sum(prod(p.shape) for p in learned_b if p.name in ok_b))
