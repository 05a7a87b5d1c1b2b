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
FUNCTIONS = (TRAIN_STEP, DISTILL_STEP, EVALUATE, LOGITS)
CONFIG_KEY = "training"


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
    """The four training functions for a model whose forward takes ``x`` and returns ``logits``
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
