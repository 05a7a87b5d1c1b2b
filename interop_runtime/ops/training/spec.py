"""The training contract a worker offers when its config has a ``training:`` section.

Pure data and numpy, shared by the framework plugins (which implement it) and the
client (which drives it), so both sides agree on names, dtypes and shapes::

    training: {optimizer: adam, lr: 1e-3, loss: cross_entropy}

    train_step    x (float32, batch first), labels (int64 class ids)
                  [soft_targets (float32 teacher logits), CONTROL only]
                  -> loss (float32 scalar), accuracy (float32 scalar), step (int64 scalar)
    distill_step  x, labels, soft_targets -> loss, accuracy, step
    evaluate      x, labels -> loss, accuracy
    logits        x -> logits (training=False; what a teacher serves)
    optimizer_state       -> meta (uint8, UTF-8 JSON: optimizer, steps, hyper-parameters),
                             state/<name> (the optimizer's tensors, e.g. Adam's moments)
    load_optimizer_state  state/<name> tensors, arg ``meta`` (optimizer_state's JSON)
                          -> step; checks every name and shape before changing anything

Node args of train_step/distill_step: ``temperature`` (default 1) and ``alpha``
(weight of the distillation term, default 0.5 when soft targets are given):
loss = alpha·T²·KL(softmax(teacher/T) || softmax(student/T)) + (1-alpha)·CE(student, labels).

Why two step functions: a FunctionSpec has no optional inputs, and a graph node waits
for every declared input, so a graph that routes a teacher's logits into a student needs
a function that declares ``soft_targets`` (distill_step); train_step declares only x and
labels, and a CONTROL call may still pass soft_targets to it.

``step`` counts the optimizer steps taken in the worker; each step also bumps the
worker's PARAM version (``WorkerPlugin.mutates_params``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from interop_runtime.wire.errors import DTypeMismatchError, ShapeMismatchError
from interop_runtime.wire.messages import FunctionSpec, TensorSpec

TRAIN_STEP = "train_step"
DISTILL_STEP = "distill_step"
EVALUATE = "evaluate"
LOGITS = "logits"
OPTIMIZER_STATE = "optimizer_state"
LOAD_OPTIMIZER_STATE = "load_optimizer_state"
FUNCTIONS = (TRAIN_STEP, DISTILL_STEP, EVALUATE, LOGITS, OPTIMIZER_STATE, LOAD_OPTIMIZER_STATE)
CONFIG_KEY = "training"
STATE_PREFIX = "state/"  # optimizer tensors travel as state/<name>: never clashes with meta
MAX_META_BYTES = 1 << 20  # an optimizer's scalars are small; a bigger meta is refused


class TrainingConfig(BaseModel):
    """The ``training:`` section of a torch or tensorflow worker config."""

    model_config = ConfigDict(extra="forbid")
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    loss: Literal["cross_entropy"] = "cross_entropy"
    momentum: float = Field(0.0, ge=0)      # sgd only
    weight_decay: float = Field(0.0, ge=0)


def parse_config(config: Mapping[str, Any]) -> TrainingConfig | None:
    """The worker config's training section, validated; None when there is none."""
    section = config.get(CONFIG_KEY)
    if section is None or section is False:
        return None
    if section is True:
        return TrainingConfig()
    return TrainingConfig.model_validate(section)


def _batched(spec: TensorSpec | None, name: str, dtype: str) -> TensorSpec:
    """``spec`` renamed, with a dynamic batch dim and a dtype (the model's, else ``dtype``)."""
    # a scalar or unknown-rank spec says nothing about a batch: any shape
    shape = [None, *spec.shape[1:]] if spec is not None and spec.shape else None
    return TensorSpec(name=name, dtype=(spec.dtype if spec else None) or dtype, shape=shape,
                      layout=spec.layout if spec else None)


def functions(x: TensorSpec | None, logits: TensorSpec | None) -> list[FunctionSpec]:
    """The training functions for a model whose forward takes ``x`` and returns ``logits``
    (the forward's own specs; names are replaced, the batch dim made dynamic)."""
    xs = _batched(x, "x", "float32")
    ls = _batched(logits, "logits", "float32")
    labels = TensorSpec(name="labels", dtype="int64", shape=[None])
    soft = ls.model_copy(update={"name": "soft_targets"})
    scalar = [TensorSpec(name="loss", dtype="float32", shape=[]),
              TensorSpec(name="accuracy", dtype="float32", shape=[])]
    step = TensorSpec(name="step", dtype="int64", shape=[])
    return [
        FunctionSpec(name=TRAIN_STEP, inputs=[xs, labels], outputs=[*scalar, step],
                     doc="one optimizer step on hard labels (CONTROL may add soft_targets); "
                         "args: temperature, alpha"),
        FunctionSpec(name=DISTILL_STEP, inputs=[xs, labels, soft], outputs=[*scalar, step],
                     doc="one optimizer step on alpha*T^2*KL(teacher||student) + "
                         "(1-alpha)*CE; args: temperature, alpha"),
        FunctionSpec(name=EVALUATE, inputs=[xs, labels], outputs=scalar,
                     doc="cross-entropy and accuracy, no update"),
        FunctionSpec(name=LOGITS, inputs=[xs], outputs=[ls], doc="logits, no update"),
        FunctionSpec(name=OPTIMIZER_STATE, outputs=[TensorSpec(name="meta", dtype="uint8",
                                                               shape=[None]), step],
                     doc="the optimizer's tensors as state/<name> outputs, its scalars as "
                         "meta (UTF-8 JSON)"),
        FunctionSpec(name=LOAD_OPTIMIZER_STATE, outputs=[step],
                     doc="state/<name> inputs and arg meta (from optimizer_state) back into "
                         "the optimizer; every name and shape is checked first"),
    ]


def check_batch(inputs: Mapping[str, np.ndarray], classes: int | None = None) -> None:
    """What a spec cannot say: labels and soft targets match x's batch, labels are in range."""
    x, labels = np.asarray(inputs["x"]), np.asarray(inputs["labels"])
    batch = x.shape[0] if x.ndim else 0
    if labels.shape != (batch,):
        raise ShapeMismatchError(f"labels has shape {labels.shape} but x has a batch of {batch}: "
                                 f"labels must be ({batch},)", field="labels")
    if batch == 0:
        raise ShapeMismatchError("x is an empty batch", field="x")
    soft = inputs.get("soft_targets")
    if soft is not None:  # declared by distill_step only: train_step checks it here
        soft = np.asarray(soft)
        if soft.dtype != np.float32:
            raise DTypeMismatchError(f"soft_targets: got {soft.dtype} but float32 is expected",
                                     field="soft_targets")
        if soft.ndim != 2 or soft.shape[0] != batch or (classes and soft.shape[1] != classes):
            raise ShapeMismatchError(f"soft_targets has shape {soft.shape} but the student's "
                                     f"logits are ({batch}, {classes or '?'})",
                                     field="soft_targets")
    if classes is not None and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must be class ids in [0, {classes}), got "
                         f"{int(labels.min())}..{int(labels.max())}")


def distill_args(args: Mapping[str, Any], *, with_soft: bool) -> tuple[float, float]:
    """(temperature, alpha) from node args; alpha is 0 without soft targets."""
    unknown = sorted(set(args) - {"temperature", "alpha"})
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)} (known: temperature, alpha)")
    temperature = float(args.get("temperature", 1.0))
    alpha = float(args.get("alpha", 0.5 if with_soft else 0.0))
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha > 0 and not with_soft:
        raise ValueError("alpha > 0 needs soft_targets (the teacher's logits)")
    return temperature, alpha


def scalars(**values: float) -> dict[str, np.ndarray]:
    """0-d output arrays: loss/accuracy float32, step int64."""
    return {k: np.asarray(v, dtype=np.int64 if k == "step" else np.float32)
            for k, v in values.items()}


def meta_array(meta: Mapping[str, Any]) -> np.ndarray:
    """Optimizer scalars as an output tensor: UTF-8 JSON bytes (outputs are arrays only)."""
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8).copy()


def read_meta(array: np.ndarray) -> dict[str, Any]:
    """``meta_array`` back to a dict; a peer's oversized or malformed meta is a typed error."""
    raw = np.asarray(array)
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_META_BYTES:
        raise ShapeMismatchError(f"optimizer meta must be uint8 (n,) of at most "
                                 f"{MAX_META_BYTES} bytes, got {raw.dtype} {raw.shape}",
                                 field="meta")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise DTypeMismatchError(f"optimizer meta is not UTF-8 JSON: {exc}", field="meta") from None
    if not isinstance(meta, dict):
        raise DTypeMismatchError("optimizer meta must be a JSON object", field="meta")
    return meta


def state_tensors(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``state/<name>`` entries of inputs or outputs, by ``<name>``."""
    n = len(STATE_PREFIX)
    return {k[n:]: v for k, v in inputs.items() if k.startswith(STATE_PREFIX)}
