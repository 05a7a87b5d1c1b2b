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
from interop_runtime.wire.errors import UnsupportedError


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
        raise UnsupportedError("the models are not compatible for a parameter copy: "
                               + "; ".join(report.verdict.reasons))
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


def copy_params(client: Client, src: str, dst: str, *, strict: bool = True,
                report: CompatReport | None = None) -> int:
    """Copy ``src``'s parameters into ``dst`` through PARAM get/set, transformed for
    dst's framework; the write demands the dst version read first, so a concurrent
    writer makes it fail rather than be overwritten. Returns dst's new version."""
    report = report or compare_workers(client, src, dst)
    if report.a != src or report.b != dst:
        raise ValueError(f"the report compares {report.a} with {report.b}, not {src} with {dst}")
    mapping = build_mapping(report, strict=strict)
    if not mapping:
        raise UnsupportedError(f"no parameter of {src} maps onto {dst}")
    listing = client.list_params(dst)
    dtypes = {n: p["dtype"] for n, p in listing["params"].items()}
    values = client.get_params(src, [e.src for e in mapping])
    return client.set_params(dst, apply_mapping(mapping, values, dtypes),
                             expected_version=listing["version"])
