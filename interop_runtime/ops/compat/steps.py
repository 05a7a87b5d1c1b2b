"""Array transforms between two frameworks' parameters (``Step``), a parameter pair with
its transform (``ParamPair``), and the layout facts both rest on. Pure data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from interop_runtime.ops.compat.modelgraph import COUNTER_ROLES, ModelGraph

AUX_ROLES = COUNTER_ROLES | {"constant"}  # need no counterpart: nothing learned in them
# weight layout pairs -> transpose axes (new axis i = old axis axes[i])
WEIGHT_AXES: dict[tuple[str, str], list[int]] = {
    ("out,in", "in,out"): [1, 0], ("in,out", "out,in"): [1, 0],
    ("OIHW", "HWIO"): [2, 3, 1, 0], ("HWIO", "OIHW"): [3, 2, 0, 1],
}
DEFAULT_IMAGE_LAYOUT = {"torch": "NCHW", "onnx": "NCHW", "tensorflow": "NHWC"}


def image_layout(g: ModelGraph, known: str | None) -> str | None:
    if known:
        return known
    for t in g.inputs:
        if t.layout:
            return t.layout
    return DEFAULT_IMAGE_LAYOUT.get(g.framework)


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
