"""Cross-framework parameter copies: a CompatReport's pairs as a name mapping with
transforms, applied to numpy arrays (and, in ``copy_params``, to live workers).

Only numpy here: every transform is a transpose or a regroup (split an axis,
permute the parts, merge), the same in every framework.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel

from interop_runtime.client import Client
from interop_runtime.ops.compat.live import compare_workers
from interop_runtime.ops.compat.report import (
    CompatReport,
    Step,
    describe,
    invert,
)
from interop_runtime.wire.dtypes import to_numpy_dtype
from interop_runtime.wire.errors import ModelMismatchError, UnsupportedError

DEFAULT_MIN_FRACTION = 0.5
"""A partial copy must write at least this share of the destination's learned parameter
elements (embeddings count by their size), or it is refused before anything is written."""


class MappingEntry(BaseModel):
    src: str
    dst: str
    steps: list[Step] = []

    def describe(self) -> str:
        return f"{self.src} -> {self.dst}: {describe(self.steps)}"


def build_mapping(report: CompatReport, *, reverse: bool = False, strict: bool = True
                  ) -> list[MappingEntry]:
    """src -> dst entries; a's parameters into b's, or b's into a's with ``reverse``.
    ``strict`` refuses a report whose verdict is not compatible (rather than copying a
    part of the parameters); non-strict copies only the pairs that fit."""
    if strict and not report.verdict.compatible:
        raise ModelMismatchError(f"{report.a} and {report.b} are not compatible for a parameter "
                                 "copy: " + "; ".join(report.verdict.reasons[:3]),
                                 worker=report.b)
    entries = []
    for pair in report.params:
        if not pair.ok:
            continue
        if reverse:
            entries.append(MappingEntry(src=pair.b, dst=pair.a, steps=invert(pair.transform)))
        else:
            entries.append(MappingEntry(src=pair.a, dst=pair.b, steps=pair.transform))
    return entries


def apply_steps(array: np.ndarray, steps: list[Step]) -> np.ndarray:
    out = np.asarray(array)
    for step in steps:
        if step.op == "transpose":
            out = out.transpose(step.axes)
        else:
            lead, rest = out.shape[:step.dim], out.shape[step.dim + 1:]
            split = out.reshape(*lead, *step.shape, *rest)
            order = [*range(step.dim), *(step.dim + a for a in step.axes),
                     *range(step.dim + len(step.shape), split.ndim)]
            out = split.transpose(order).reshape(*lead, -1, *rest)
    return np.ascontiguousarray(out)  # frames go out as they lie in memory


def apply_mapping(mapping: list[MappingEntry], arrays: Mapping[str, np.ndarray],
                  dtypes: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """dst name -> transformed array, cast to ``dtypes[dst]`` (wire names) when given."""
    out: dict[str, np.ndarray] = {}
    for entry in mapping:
        value = apply_steps(arrays[entry.src], entry.steps)
        if dtypes and entry.dst in dtypes:
            value = value.astype(to_numpy_dtype(dtypes[entry.dst]), copy=False)
        out[entry.dst] = value
    return out


class CopyResult(BaseModel):
    """What a copy wrote: the pairs copied and refused, and the destination's new version."""

    version: int
    copied: list[MappingEntry]
    refused: list[str]  # "a -> b: why" for pairs found but not copied
    unmatched: list[str]  # destination parameters no source parameter maps onto
    fraction: float  # share of the destination's learned elements written


def check_fraction(report: CompatReport, min_fraction: float | None) -> None:
    """Refuse a partial copy that would write less than ``min_fraction`` of b's elements."""
    need = DEFAULT_MIN_FRACTION if min_fraction is None else min_fraction
    if not 0.0 <= need <= 1.0:
        raise UnsupportedError(f"min_fraction must be in [0, 1], got {need}", field="min_fraction")
    got = report.summary.fraction
    if got < need:
        s = report.summary
        raise ModelMismatchError(
            f"a partial copy {report.a} -> {report.b} would write {s.copyable} of {s.params_b} "
            f"parameters ({got:.1%} of {report.b}'s elements), under the minimum {need:.0%}; "
            f"{s.refused} pair(s) refused" + (f" ({report.summary.reasons[0]})"
                                               if report.summary.reasons else ""),
            worker=report.b, field="min_fraction")


def copy_params(client: Client, src: str, dst: str, *, strict: bool = True,
                report: CompatReport | None = None, min_fraction: float | None = None) -> int:
    """Copy ``src``'s parameters into ``dst`` (see ``copy_params_detailed``); returns dst's
    new version."""
    return copy_params_detailed(client, src, dst, strict=strict, report=report,
                                min_fraction=min_fraction).version


def copy_params_detailed(client: Client, src: str, dst: str, *, strict: bool = True,
                         report: CompatReport | None = None, min_fraction: float | None = None
                         ) -> CopyResult:
    """Copy ``src``'s parameters into ``dst`` through PARAM get/set, transformed for
    dst's framework; the write demands the dst version read first, so a concurrent
    writer makes it fail rather than be overwritten. ``strict`` False copies the pairs
    that fit, if they cover at least ``min_fraction`` (default DEFAULT_MIN_FRACTION) of
    dst's learned parameter elements. A misfit raises ModelMismatchError."""
    report = report or compare_workers(client, src, dst)
    if report.a != src or report.b != dst:
        raise UnsupportedError(f"the report compares {report.a} with {report.b}, not {src} "
                               f"with {dst}", field="report")
    if not strict:
        check_fraction(report, min_fraction)
    mapping = build_mapping(report, strict=strict)
    if not mapping:
        raise ModelMismatchError(f"no parameter of {src} maps onto {dst}", worker=dst)
    listing = client.list_params(dst)
    dtypes = {n: p["dtype"] for n, p in listing["params"].items()}
    values = client.get_params(src, [e.src for e in mapping])
    version = client.set_params(dst, apply_mapping(mapping, values, dtypes),
                                expected_version=listing["version"])
    return CopyResult(version=version, copied=mapping,
                      refused=[f"{p.a} -> {p.b}: {p.note}" for p in report.params if not p.ok],
                      unmatched=list(report.unmatched_b), fraction=report.summary.fraction)
