"""Training driven from the client: fine-tuning and distillation through workers.

The optimizer lives in the worker (its config's ``training:`` section, see
``trainspec``); the client only streams batches, numpy only:

- ``fine_tune``: per batch, CONTROL ``train_step`` on one worker.
- ``distill``: per batch, one run of a registered graph
  ``teacher.logits -> student.distill_step.soft_targets`` (x to both, labels to the
  student), so the teacher's logits go worker to worker and never through the client.

Both return one dict of metrics per epoch (loss, accuracy on the training batches,
val_loss/val_accuracy through ``evaluate`` when held-out data is given), and can
checkpoint the worker's parameters to safetensors after every epoch (``paramops``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from interop_runtime.client.client import Client
from interop_runtime.graph.builder import Graph
from interop_runtime.ops.params.plane import export_safetensors, import_safetensors
from interop_runtime.ops.training.spec import DISTILL_STEP, EVALUATE, LOGITS, TRAIN_STEP

Metrics = dict[str, Any]
Step = Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays covering 0..n-1 once, shuffled when ``rng`` is given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _inputs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # the workers' signatures say float32 features and int64 labels; cast once, here
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    return x, y


def evaluate(client: Client, worker: str, x: np.ndarray, y: np.ndarray, *,
             batch_size: int = 512) -> Metrics:
    """Mean cross-entropy and accuracy over (x, y), through the worker's ``evaluate``."""
    x, y = _inputs(x, y)
    loss = acc = 0.0
    for idx in batches(len(x), batch_size, None):
        out = client.call(worker, EVALUATE, {"x": x[idx], "labels": y[idx]})
        loss += float(out["loss"]) * len(idx)
        acc += float(out["accuracy"]) * len(idx)
    return {"loss": loss / len(x), "accuracy": acc / len(x)}


def checkpoint(client: Client, worker: str, path: str | Path) -> int:
    """The worker's parameters to a safetensors file; returns the PARAM version saved."""
    return export_safetensors(client, worker, path)


def restore(client: Client, worker: str, path: str | Path) -> int:
    """A safetensors checkpoint back into the worker; returns the new PARAM version.
    The worker's optimizer state (e.g. Adam's moments) is not part of a checkpoint."""
    return import_safetensors(client, worker, path)


def fine_tune(client: Client, worker: str, x: np.ndarray, y: np.ndarray, *, epochs: int,
              batch_size: int = 32, x_val: np.ndarray | None = None,
              y_val: np.ndarray | None = None, seed: int = 0,
              checkpoint_path: str | Path | None = None, progress: bool = True,
              on_epoch: Callable[[Metrics], None] | None = None,
              console: Console | None = None) -> list[Metrics]:
    """Train ``worker`` on (x, y) with its own optimizer, one CONTROL train_step per batch."""
    def step(xb: np.ndarray, yb: np.ndarray) -> Mapping[str, np.ndarray]:
        return client.call(worker, TRAIN_STEP, {"x": xb, "labels": yb})

    return _epochs(client, worker, step, x, y, epochs=epochs, batch_size=batch_size,
                   x_val=x_val, y_val=y_val, seed=seed, checkpoint_path=checkpoint_path,
                   progress=progress, on_epoch=on_epoch, console=console,
                   label=f"fine-tune {worker}")


def distill_graph(teacher: str, student: str, *, temperature: float, alpha: float,
                  teacher_function: str = LOGITS, teacher_output: str = "logits",
                  name: str | None = None) -> Graph:
    """teacher.logits -> student.distill_step.soft_targets; x feeds both, labels the student.

    A teacher without a ``training:`` section can serve its ``forward`` instead:
    ``teacher_function="forward", teacher_output=<its output's name>``."""
    g = Graph(name or f"distill-{teacher}-{student}")
    g.node("teacher", teacher, teacher_function)
    g.node("student", student, DISTILL_STEP, temperature=float(temperature), alpha=float(alpha))
    g.edge(f"teacher.{teacher_output}", "student.soft_targets")
    g.input("x", "teacher.x", "student.x").input("labels", "student.labels")
    for out in ("loss", "accuracy", "step"):
        g.output(out, f"student.{out}")
    return g


def distill(client: Client, teacher: str, student: str, x: np.ndarray, y: np.ndarray, *,
            epochs: int, temperature: float = 4.0, alpha: float = 0.5, batch_size: int = 32,
            x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, seed: int = 0,
            checkpoint_path: str | Path | None = None, progress: bool = True,
            on_epoch: Callable[[Metrics], None] | None = None,
            console: Console | None = None, teacher_function: str = LOGITS,
            teacher_output: str = "logits") -> list[Metrics]:
    """Train ``student`` on (x, y) and on ``teacher``'s logits, one graph run per batch.

    The graph is registered once (the coordinator checks that the teacher's logits fit
    the student's soft_targets: dtype, shape); the teacher is not updated."""
    graph = distill_graph(teacher, student, temperature=temperature, alpha=alpha,
                          teacher_function=teacher_function, teacher_output=teacher_output)
    client.register(graph)

    def step(xb: np.ndarray, yb: np.ndarray) -> Mapping[str, np.ndarray]:
        return client.run(graph.name, {"x": xb, "labels": yb})

    try:
        return _epochs(client, student, step, x, y, epochs=epochs, batch_size=batch_size,
                       x_val=x_val, y_val=y_val, seed=seed, checkpoint_path=checkpoint_path,
                       progress=progress, on_epoch=on_epoch, console=console,
                       label=f"distill {teacher} -> {student}")
    finally:
        client.drop(graph.name)


def _epochs(client: Client, worker: str, step: Step, x: np.ndarray, y: np.ndarray, *,
            epochs: int, batch_size: int, x_val: np.ndarray | None, y_val: np.ndarray | None,
            seed: int, checkpoint_path: str | Path | None, progress: bool,
            on_epoch: Callable[[Metrics], None] | None, console: Console | None,
            label: str) -> list[Metrics]:
    """The epoch loop shared by fine_tune and distill: shuffle, step, aggregate, validate."""
    x, y = _inputs(x, y)
    if (x_val is None) != (y_val is None):
        raise ValueError("give both x_val and y_val, or neither")
    rng = np.random.default_rng(seed)  # the same seed gives the same batches in every run
    per_epoch = -(-len(x) // batch_size)
    history: list[Metrics] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task(label, total=per_epoch * epochs, info="")
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            loss = acc = 0.0
            last_step = 0
            for idx in batches(len(x), batch_size, rng):
                out = step(x[idx], y[idx])
                loss += float(out["loss"]) * len(idx)
                acc += float(out["accuracy"]) * len(idx)
                last_step = int(out["step"])
                bar.update(task, advance=1, info=f"epoch {epoch}/{epochs} loss "
                                                 f"{float(out['loss']):.4f}")
            metrics: Metrics = {"epoch": epoch, "loss": loss / len(x), "accuracy": acc / len(x),
                                "step": last_step, "seconds": time.perf_counter() - t0}
            if x_val is not None and y_val is not None:
                val = evaluate(client, worker, x_val, y_val)
                metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            if checkpoint_path is not None:
                metrics["version"] = checkpoint(client, worker, checkpoint_path)
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(metrics)
    return history
