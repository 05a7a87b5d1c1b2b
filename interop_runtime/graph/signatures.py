"""Tensor specs: whether a tensor or another spec fits, judged by dtype, shape and layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interop_runtime.wire.dtypes import wire_dtype
from interop_runtime.wire.errors import (
    DTypeMismatchError,
    InteropError,
    LayoutMismatchError,
    ShapeMismatchError,
)
from interop_runtime.wire.messages import FunctionSpec, TensorSpec

__all__ = ["FunctionSpec", "TensorSpec", "spec", "check_array", "check_edge", "format_shape"]


def spec(name: str, dtype: str | None = None, shape: Sequence[int | None] | None = None,
         layout: str | None = None) -> TensorSpec:
    """Shorthand for a TensorSpec; ``None`` in a shape marks a dynamic dimension."""
    return TensorSpec(name=name, dtype=dtype, shape=None if shape is None else list(shape),
                      layout=layout)


def format_shape(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "(any)"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _shapes_fit(a: Sequence[int | None] | None, b: Sequence[int | None] | None) -> bool:
    if a is None or b is None:
        return True
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a, b))


def narrowest(a: TensorSpec, b: TensorSpec) -> TensorSpec:
    """What accepts only tensors both ``a`` and ``b`` accept (they fit: check_edge said so)."""
    if a.shape is None or b.shape is None:
        shape = a.shape if b.shape is None else b.shape
    else:
        shape = [x if x is not None else y for x, y in zip(a.shape, b.shape, strict=True)]
    return TensorSpec(name=a.name, dtype=a.dtype or b.dtype, shape=shape,
                      layout=a.layout or b.layout)


def check_edge(producer: TensorSpec, consumer: TensorSpec, *, edge: str, node: str | None = None
               ) -> InteropError | None:
    """The mismatch between what a producer emits and a consumer accepts, or None."""
    if producer.dtype and consumer.dtype and producer.dtype != consumer.dtype:
        return DTypeMismatchError(
            f"edge {edge}: produces {producer.dtype} but the input takes {consumer.dtype}",
            edge=edge, node=node)
    if not _shapes_fit(producer.shape, consumer.shape):
        return ShapeMismatchError(
            f"edge {edge}: produces shape {format_shape(producer.shape)} but the input takes "
            f"{format_shape(consumer.shape)}", edge=edge, node=node)
    if producer.layout and consumer.layout and producer.layout != consumer.layout:
        return LayoutMismatchError(
            f"edge {edge}: produces layout {producer.layout} but the input takes {consumer.layout}",
            edge=edge, node=node)
    return None


def check_array(expected: TensorSpec, array: Any, *, where: str, node: str | None = None) -> None:
    """Raise a typed mismatch error if ``array`` does not fit ``expected``."""
    import numpy as np

    arr = np.asarray(array) if not hasattr(array, "dtype") else array
    got_dtype = wire_dtype(arr.dtype)
    if expected.dtype and expected.dtype != got_dtype:
        raise DTypeMismatchError(f"{where}: got {got_dtype} but {expected.dtype} is expected",
                                 field=expected.name, node=node)
    if not _shapes_fit(list(arr.shape), expected.shape):
        raise ShapeMismatchError(f"{where}: got shape {format_shape(list(arr.shape))} but "
                                 f"{format_shape(expected.shape)} is expected",
                                 field=expected.name, node=node)


def function_index(functions: Sequence[FunctionSpec]) -> dict[str, FunctionSpec]:
    return {f.name: f for f in functions}


def batch_dim_problem(spec: FunctionSpec, dim: int) -> str | None:
    """Why ``spec`` cannot batch along ``dim`` (None: it can): every input and output must
    declare a dynamic (null or -1) size there. Checked where a worker starts and again
    where it registers."""
    if not spec.inputs:
        return f"{spec.name} has no inputs to batch"
    for kind, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        for t in tensors:
            if t.shape is None:
                return (f"{kind} {t.name!r} declares no shape; batching needs a dynamic size "
                        f"at dim {dim} (e.g. [null, 4])")
            if len(t.shape) <= dim or t.shape[dim] not in (None, -1):
                return (f"{kind} {t.name!r} has shape {format_shape(t.shape)}, without a "
                        f"dynamic size at dim {dim}")
    return None
