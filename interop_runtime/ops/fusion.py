"""Output fusion: combine the predictions of several models (any frameworks) in one node.

Hosted by the built-in NumPy plugin. The inputs are the branches' outputs (logits or
probabilities, classes on the last axis), one named input per model; the names and their
order are declared in the worker config, which ``fusion_worker`` builds::

    fusion_worker("fuse", ["tf", "torch", "onnx"], classes=3)
    g.node("avg", "fuse", "mean", weights=[0.5, 0.3, 0.2], softmax=True, temperature=2.0)
    g.node("maj", "fuse", "vote")

Weights are node args: a list in the declared input order, or a mapping input -> weight;
they are normalized to sum 1 and must be finite and non-negative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from interop_runtime.wire.errors import BadArgumentError

MODULE = "interop_runtime.ops.fusion"
RESERVED = frozenset({"names", "weights", "softmax", "temperature"})


def probabilities(x: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    """softmax(x / temperature) along ``axis``, computed in float64 (max-shifted)."""
    z = np.asarray(x, np.float64) / temperature
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def _stack(tensors: Mapping[str, np.ndarray], names: Sequence[str] | None,
           weights: Sequence[float] | Mapping[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """The inputs stacked in declared order (models first) and their normalized weights."""
    order = list(names) if names is not None else sorted(tensors)  # the wire keeps no order
    missing = [n for n in order if n not in tensors]
    extra = [n for n in tensors if n not in order]
    if missing or extra:
        raise ValueError(f"fusion inputs {sorted(tensors)} do not match the declared names "
                         f"{order}")
    if not order:
        raise ValueError("fusion needs at least one input")
    shapes = {n: np.shape(tensors[n]) for n in order}
    if len(set(shapes.values())) != 1:
        raise ValueError("fusion inputs must all have the same shape, got "
                         + ", ".join(f"{n}: {list(s)}" for n, s in shapes.items()))
    if len(shapes[order[0]]) < 1:
        raise ValueError("fusion inputs need a class axis (the last one); got scalars")
    if weights is None:
        w = np.ones(len(order))
    elif isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(order))
        if unknown or len(weights) != len(order):
            raise ValueError(f"weights name {sorted(weights)}, the inputs are {order}")
        w = np.array([float(weights[n]) for n in order])
    else:
        if len(weights) != len(order):
            raise ValueError(f"{len(weights)} weights for {len(order)} inputs ({', '.join(order)})")
        w = np.array([float(x) for x in weights])
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return np.stack([np.asarray(tensors[n]) for n in order]), w / w.sum()


def mean(*, names: Sequence[str] | None = None,
         weights: Sequence[float] | Mapping[str, float] | None = None,
         softmax: bool = False, temperature: float = 1.0,
         **tensors: np.ndarray) -> np.ndarray:
    """Weighted average of the models' outputs: sum_i w_i * f(x_i), w normalized to sum 1.

    f is the identity (averaging logits or probabilities as given), or, with softmax=True,
    softmax(x / temperature) over the last axis (averaging probabilities). A temperature
    without softmax is an error. Computed in float64, returned in the inputs' float dtype."""
    stacked, w = _stack(tensors, names, weights)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not softmax and temperature != 1.0:
        raise ValueError("temperature applies only with softmax=True")
    values = probabilities(stacked, temperature) if softmax else stacked.astype(np.float64)
    out = np.tensordot(w, values, axes=1)
    dtype = stacked.dtype if np.issubdtype(stacked.dtype, np.floating) else np.float32
    return out.astype(dtype)


def vote(*, names: Sequence[str] | None = None,
         weights: Sequence[float] | Mapping[str, float] | None = None,
         softmax: bool = True, temperature: float = 1.0, **tensors: np.ndarray) -> np.ndarray:
    """Majority vote: each model votes for its argmax class (a vote counts its weight; equal
    weights by default), the class with most votes wins.

    Ties between classes with the same vote count are broken by the highest summed
    probability over all models (softmax(x / temperature) of each input when softmax=True,
    the inputs as given when they already are probabilities: softmax=False); a tie that
    remains goes to the lowest class index. Returns int64 labels, shape = inputs' shape
    without the last axis."""
    stacked, w = _stack(tensors, names, weights)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    classes = stacked.shape[-1]
    picks = stacked.argmax(axis=-1)                                   # (models, ...)
    counts = np.tensordot(w, np.eye(classes)[picks], axes=1)          # (..., classes)
    probs = (probabilities(stacked, temperature) if softmax
             else stacked.astype(np.float64)).sum(axis=0)
    # exact float ties: weights are normalized, so compare counts with a tolerance
    best = np.isclose(counts, counts.max(axis=-1, keepdims=True), rtol=0, atol=1e-9)
    return np.where(best, probs, -np.inf).argmax(axis=-1).astype(np.int64)


def fusion_worker(name: str, inputs: Sequence[str], *, classes: int | None = None,
                  dtype: str = "float32", **extra: Any) -> dict[str, Any]:
    """A worker spec (for ClusterSpec / start_cluster) for the NumPy plugin hosting ``mean``
    and ``vote`` over the named inputs, in this order (the order node-arg weights follow)."""
    inputs = list(inputs)
    bad = [n for n in inputs if n in RESERVED or not n.isidentifier()]
    if bad or len(set(inputs)) != len(inputs) or not inputs:
        raise BadArgumentError(f"fusion inputs must be distinct identifiers, not {sorted(RESERVED)}; "
                         f"got {inputs}")
    # with a class count, 2-D (batch, classes); without, any rank (classes last)
    shape: list[int | None] | None = [None, classes] if classes is not None else None
    ins = [{"name": n, "dtype": dtype, "shape": shape} for n in inputs]
    functions = {
        "mean": {"callable": f"{MODULE}:mean", "args": {"names": inputs}, "inputs": ins,
                 "outputs": [{"name": "y", "dtype": dtype, "shape": shape}]},
        "vote": {"callable": f"{MODULE}:vote", "args": {"names": inputs}, "inputs": ins,
                 "outputs": [{"name": "y", "dtype": "int64",
                              "shape": [None] if classes is not None else None}]},
    }
    config = {"functions": functions, **extra.pop("config", {})}
    return {"name": name, "plugin": "numpy", "config": config, **extra}
