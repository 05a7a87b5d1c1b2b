"""Tensor specs from what TensorFlow and Keras know about a model's inputs and outputs.

TensorFlow's dtype names are the wire names for all fifteen wire dtypes
(bfloat16 included), so a dtype translates by name. Nothing here imports
TensorFlow: the objects handed in already carry it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from interop_runtime import WIRE_DTYPES, TensorSpec

# Keras layer data_format -> the layout of a rank-4 image tensor
_LAYOUTS = {"channels_last": "NHWC", "channels_first": "NCHW"}


def wire_name(dtype: Any, *, what: str) -> str:
    """The wire dtype name of a tf.DType or Keras dtype string; ValueError if none."""
    name = getattr(dtype, "name", dtype)
    if name not in WIRE_DTYPES:
        raise ValueError(f"{what} has dtype {name}, which cannot travel on the wire "
                         f"(wire dtypes: {', '.join(WIRE_DTYPES)})")
    return str(name)


def shape_list(shape: Any) -> list[int | None] | None:
    """A TensorShape or tuple as a spec shape: None = any rank, None entries = dynamic."""
    if shape is None or getattr(shape, "rank", 0) is None:  # TensorShape(None): unknown rank
        return None
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return [None if d is None else int(d) for d in dims]


def unique_names(names: Iterable[str]) -> list[str]:
    """Names made unique by suffixing repeats (_1, _2, ...), first one unchanged."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for name in names:
        n = seen.get(name, 0)
        seen[name] = n + 1
        out.append(name if n == 0 else f"{name}_{n}")
    return out


def image_layout(layers: Iterable[Any]) -> str | None:
    """NHWC/NCHW when every 2-D spatial layer (Conv2D, pooling, ...) agrees, else None."""
    formats = {getattr(layer, "data_format", None) for layer in _walk(layers)
               if type(layer).__name__.endswith("2D")}
    formats.discard(None)
    return _LAYOUTS.get(formats.pop()) if len(formats) == 1 else None


def _walk(layers: Iterable[Any]) -> Iterable[Any]:
    for layer in layers:
        yield layer
        yield from _walk(getattr(layer, "layers", None) or [])  # nested models


def tensor_spec(name: str, dtype: Any, shape: Any, *, layout: str | None, what: str
                ) -> TensorSpec:
    dims = shape_list(shape)
    return TensorSpec(name=name, dtype=wire_name(dtype, what=what), shape=dims,
                      layout=layout if dims is not None and len(dims) == 4 else None)


def apply_overrides(derived: Sequence[TensorSpec], overrides: Sequence[Mapping[str, Any]] | None,
                    *, what: str) -> list[TensorSpec]:
    """Config ``inputs``/``outputs`` entries, matched to the model's tensors by position;
    a field an entry leaves out keeps the model's value (``dtype: null`` means any)."""
    if overrides is None:
        return list(derived)
    if len(overrides) != len(derived):
        raise ValueError(f"config {what} lists {len(overrides)} tensors but the model has "
                         f"{len(derived)} ({', '.join(s.name for s in derived)})")
    return [TensorSpec.model_validate({**spec.model_dump(), **dict(entry)})
            for spec, entry in zip(derived, overrides)]
