"""What one training epoch reports: the typed record a ``callback`` gets, and its dict form
(the history ``fine_tune``/``distill`` return, and a checkpoint's JSON, hold the dicts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Metrics = dict[str, Any]


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: means over its training batches, weighted by batch size.

    ``steps`` counts the optimizer steps of this epoch, ``step`` the worker's total after
    it; ``losses`` are the per-step losses in order (what a step-for-step comparison reads).
    """

    epoch: int
    loss: float
    accuracy: float
    steps: int
    step: int
    samples: int
    seconds: float
    losses: tuple[float, ...] = field(default=(), repr=False)
    val_loss: float | None = None
    val_accuracy: float | None = None
    version: int | None = None  # the PARAM version checkpointed after this epoch

    def as_dict(self) -> Metrics:
        out: Metrics = {"epoch": self.epoch, "loss": self.loss, "accuracy": self.accuracy,
                        "steps": self.steps, "step": self.step, "samples": self.samples,
                        "seconds": self.seconds}
        for key in ("val_loss", "val_accuracy", "version"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


Callback = Callable[[EpochRecord], None]
