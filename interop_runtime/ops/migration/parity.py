"""Parity between a model and its migrated copy: the same inputs, outputs compared.

Per output, in float64:

    abs_err = |candidate - reference|
    rel_err = abs_err / max(|reference|, rel_floor)     (the floor keeps near-zero
                                                         references from dividing by ~0)
    passed  = every element has abs_err <= atol + rtol * |reference|   (numpy.allclose,
                                                         NaN never equal to NaN)

Defaults rtol=1e-3, atol=1e-5 are the PyTorch ONNX Runtime tutorial's; rel_floor=1e-6.
max_rel_err is reported for reading, the verdict is the allclose rule. Outputs
match by name; when no names are shared and the counts agree, by position.
NumPy only: both sides' outputs are already numpy arrays when they reach here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-5
DEFAULT_REL_FLOOR = 1e-6


class Tolerance(BaseModel):
    rtol: float = Field(DEFAULT_RTOL, ge=0)
    atol: float = Field(DEFAULT_ATOL, ge=0)
    rel_floor: float = Field(DEFAULT_REL_FLOOR, gt=0)


class OutputParity(BaseModel):
    name: str  # the reference's output name
    candidate_name: str | None = None  # when matched by position under another name
    shape: list[int] | None = None
    dtype: str | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    mismatched: int = 0  # elements outside atol + rtol * |reference|
    total: int = 0
    passed: bool = False
    problem: str | None = None  # missing output, shape or dtype disagreement


class ParityReport(BaseModel):
    source: str  # e.g. "torch-mlp.forward"
    target: str  # e.g. "torch-mlp-onnx.run"
    direction: str | None = None  # e.g. "torch -> onnx", "onnx -> torch"
    tolerance: Tolerance
    outputs: list[OutputParity]
    passed: bool
    exporter: str | None = None
    opset: int | None = None
    onnx_path: str | None = None
    onnx_bytes: int | None = None
    inputs: dict[str, list[int]] = {}  # the input shapes the comparison ran on
    notes: list[str] = []  # exporter fallbacks and the like

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    def table(self) -> Any:
        """A rich Table, one row per output."""
        from rich.table import Table

        title = (f"parity {self.source} -> {self.target}: "
                 f"{'PASS' if self.passed else 'FAIL'} (rtol={self.tolerance.rtol:g}, "
                 f"atol={self.tolerance.atol:g})")
        table = Table("output", "shape", "dtype", "max abs err", "max rel err", "mismatched",
                      "result", title=title)
        for o in self.outputs:
            table.add_row(o.name if o.candidate_name in (None, o.name)
                          else f"{o.name} ~ {o.candidate_name}",
                          "x".join(map(str, o.shape)) if o.shape is not None else "-",
                          o.dtype or "-", _num(o.max_abs_err), _num(o.max_rel_err),
                          f"{o.mismatched}/{o.total}",
                          "[green]pass[/green]" if o.passed else
                          f"[red]FAIL[/red]{': ' + o.problem if o.problem else ''}")
        return table


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def compare_output(name: str, reference: np.ndarray, candidate: np.ndarray | None,
                   tolerance: Tolerance, candidate_name: str | None = None) -> OutputParity:
    ref = np.asarray(reference)
    base = OutputParity(name=name, candidate_name=candidate_name, shape=list(ref.shape),
                        dtype=str(ref.dtype), total=int(ref.size))
    if candidate is None:
        return base.model_copy(update={"problem": "missing in the migrated model's outputs"})
    cand = np.asarray(candidate)
    if cand.shape != ref.shape:
        return base.model_copy(update={"problem": f"shape {list(cand.shape)} != "
                                                  f"{list(ref.shape)}"})
    if not (_numeric(ref) and _numeric(cand)):
        equal = np.array_equal(ref, cand)
        return base.model_copy(update={"passed": equal, "mismatched": 0 if equal else ref.size,
                                       "problem": None if equal else "values differ"})
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    err = np.abs(c - r)
    rel = err / np.maximum(np.abs(r), tolerance.rel_floor)
    ok = np.isclose(c, r, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=False)
    mismatched = int(ok.size - np.count_nonzero(ok))
    problem = None if cand.dtype == ref.dtype else f"dtype {cand.dtype} != {ref.dtype}"
    return base.model_copy(update={
        "max_abs_err": float(err.max()) if err.size else 0.0,
        "max_rel_err": float(rel.max()) if rel.size else 0.0,
        "mismatched": mismatched, "passed": mismatched == 0 and problem is None,
        "problem": problem})


def _numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "biuf"


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], *,
            source: str, target: str, tolerance: Tolerance | None = None, **extra: Any
            ) -> ParityReport:
    """The report for two sets of outputs of the same inputs (``extra``: report fields)."""
    tol = tolerance or Tolerance()
    pairs: list[tuple[str, str | None]]
    if set(reference) & set(candidate) or len(reference) != len(candidate):
        pairs = [(n, n if n in candidate else None) for n in reference]
    else:  # no shared names, same count: positional (e.g. exporter-chosen ONNX names)
        pairs = list(zip(reference, candidate))
    outputs = [compare_output(n, reference[n], candidate.get(c) if c else None, tol,
                              candidate_name=c) for n, c in pairs]
    passed = bool(outputs) and all(o.passed for o in outputs)
    return ParityReport(source=source, target=target, tolerance=tol, outputs=outputs,
                        passed=passed, **extra)


def load_report(text: str) -> ParityReport:
    return ParityReport.model_validate(json.loads(text))


class MigrationReport(BaseModel):
    """A round trip, one ParityReport per direction: source -> ONNX (ONNX Runtime serving
    the file), ONNX -> the target framework (the file loaded there, against ONNX
    Runtime's outputs) and source -> target end to end. Passes when every one does."""

    source: str
    onnx_path: str | None = None
    onnx_bytes: int | None = None
    exporter: str | None = None
    opset: int | None = None
    inputs: dict[str, list[int]] = {}
    directions: list[ParityReport]
    passed: bool
    notes: list[str] = []

    def direction(self, name: str) -> ParityReport:
        return next(d for d in self.directions if d.direction == name)

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    def table(self) -> Any:
        """A rich Table, one row per direction and output, with its tolerance."""
        from rich.table import Table

        table = Table("direction", "output", "max abs err", "max rel err", "tolerance",
                      "mismatched", "result", title=f"round trip of {self.source}: "
                      f"{'PASS' if self.passed else 'FAIL'}")
        for d in self.directions:
            for o in d.outputs:
                table.add_row(d.direction or f"{d.source} -> {d.target}", o.name,
                              _num(o.max_abs_err), _num(o.max_rel_err),
                              f"rtol={d.tolerance.rtol:g} atol={d.tolerance.atol:g}",
                              f"{o.mismatched}/{o.total}",
                              "[green]pass[/green]" if o.passed else
                              f"[red]FAIL[/red]{': ' + o.problem if o.problem else ''}")
        return table
