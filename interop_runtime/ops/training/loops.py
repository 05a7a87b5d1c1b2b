"""Training driven from the client: fine-tuning and distillation through workers.

The optimizer lives in the worker (its config's ``training:`` section, see
``trainspec``); the client only streams batches, numpy only:

- ``fine_tune``: per batch, CONTROL ``train_step`` on one worker.
- ``distill``: per batch, one run of a registered graph
  ``teacher.logits -> student.distill_step.soft_targets`` (x to both, labels to the
  student), so the teacher's logits go worker to worker and never through the client.

Both are steerable (``order``): a seed (the default: a seeded shuffle), an explicit
order, a sampler, or the caller's own ``(x, y)`` batches. Both return one dict of metrics
per epoch run (loss, accuracy on the training batches, val_loss/val_accuracy through
``evaluate`` when held-out data is given), hand a typed ``EpochRecord`` to ``callback``,
and with ``checkpoint=PATH`` save parameters, optimizer state and the loop's scalars
after every epoch (``checkpoint``); ``resume=True`` continues from there, drawing the
batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from interop_runtime.client.client import Client
from interop_runtime.graph.builder import Graph
from interop_runtime.ops.params.plane import export_safetensors, import_safetensors
from interop_runtime.ops.training import checkpoint as ckpt
from interop_runtime.ops.training.order import Batches, Order, Plan, features, labels, make_plan
from interop_runtime.ops.training.record import Callback, EpochRecord, Metrics
from interop_runtime.ops.training.spec import DISTILL_STEP, EVALUATE, LOGITS, TRAIN_STEP
from interop_runtime.wire.errors import BadArgumentError

__all__ = ["EpochRecord", "Metrics", "batches", "checkpoint", "distill", "distill_graph",
           "evaluate", "fine_tune", "restore"]

Step = Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays covering 0..n-1 once, shuffled when ``rng`` is given."""
    if batch_size < 1:
        raise BadArgumentError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def evaluate(client: Client, worker: str, x: np.ndarray, y: np.ndarray, *,
             batch_size: int = 512) -> Metrics:
    """Mean cross-entropy and accuracy over (x, y), through the worker's ``evaluate``."""
    x = features(x)
    y = labels(y, len(x))
    loss = acc = 0.0
    for idx in batches(len(x), batch_size, None):
        out = client.call(worker, EVALUATE, {"x": x[idx], "labels": y[idx]})
        loss += float(out["loss"]) * len(idx)
        acc += float(out["accuracy"]) * len(idx)
    return {"loss": loss / len(x), "accuracy": acc / len(x)}


def checkpoint(client: Client, worker: str, path: str | Path) -> int:
    """The worker's parameters (only) to a safetensors file; returns the PARAM version.
    A checkpoint that resumes (with the optimizer state) is ``fine_tune(checkpoint=...)``."""
    return export_safetensors(client, worker, path)


def restore(client: Client, worker: str, path: str | Path) -> int:
    """A safetensors file of parameters back into the worker; returns the new PARAM version.
    The optimizer state comes back only with ``resume=True`` (``ops.training.checkpoint``)."""
    return import_safetensors(client, worker, path)


@dataclass
class _Loop:
    """One call's settings, shared by fine_tune and distill."""

    epochs: int
    batch_size: int
    seed: int
    label: str
    kind: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    order: Order | None = None
    sampler: Iterable[Any] | None = None
    batches: Batches | None = None
    callback: Callback | None = None
    on_epoch: Callable[[Metrics], None] | None = None
    resume: bool = False
    checkpoint: Path | None = None
    progress: bool = True
    console: Console | None = None
    recipe: dict[str, Any] = field(default_factory=dict)  # recorded in the checkpoint


def _path(checkpoint: str | Path | None, checkpoint_path: str | Path | None) -> Path | None:
    if checkpoint is not None and checkpoint_path is not None:
        raise BadArgumentError("give checkpoint or checkpoint_path (its old name), not both")
    chosen = checkpoint if checkpoint is not None else checkpoint_path
    return None if chosen is None else Path(chosen)


def fine_tune(client: Client, worker: str, x: Any = None, y: Any = None, *, epochs: int,
              batch_size: int = 32, x_val: np.ndarray | None = None,
              y_val: np.ndarray | None = None, seed: int = 0, order: Order | None = None,
              sampler: Iterable[Any] | None = None, batches: Batches | None = None,
              callback: Callback | None = None, resume: bool = False,
              checkpoint: str | Path | None = None, checkpoint_path: str | Path | None = None,
              progress: bool = True, on_epoch: Callable[[Metrics], None] | None = None,
              console: Console | None = None) -> list[Metrics]:
    """Train ``worker`` with its own optimizer, one CONTROL train_step per batch.

    ``epochs`` is the total: resuming a checkpoint of epoch 3 with ``epochs=5`` runs 4, 5."""
    def step(xb: np.ndarray, yb: np.ndarray) -> Mapping[str, np.ndarray]:
        return client.call(worker, TRAIN_STEP, {"x": xb, "labels": yb})

    loop = _Loop(epochs=epochs, batch_size=batch_size, seed=seed, label=f"fine-tune {worker}",
                 kind="fine_tune", x_val=x_val, y_val=y_val, order=order, sampler=sampler,
                 batches=batches, callback=callback, on_epoch=on_epoch, resume=resume,
                 checkpoint=_path(checkpoint, checkpoint_path), progress=progress,
                 console=console)
    return _epochs(client, worker, TRAIN_STEP, step, x, y, loop)


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


def distill(client: Client, teacher: str, student: str, x: Any = None, y: Any = None, *,
            epochs: int, temperature: float = 4.0, alpha: float = 0.5, batch_size: int = 32,
            x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, seed: int = 0,
            order: Order | None = None, sampler: Iterable[Any] | None = None,
            batches: Batches | None = None, callback: Callback | None = None,
            resume: bool = False, checkpoint: str | Path | None = None,
            checkpoint_path: str | Path | None = None, progress: bool = True,
            on_epoch: Callable[[Metrics], None] | None = None,
            console: Console | None = None, teacher_function: str = LOGITS,
            teacher_output: str = "logits") -> list[Metrics]:
    """Train ``student`` on (x, y) and on ``teacher``'s logits, one graph run per batch.

    The graph is registered once (the coordinator checks that the teacher's logits fit
    the student's soft_targets: dtype, shape); the teacher is not updated, and a checkpoint
    holds the student only. Steering, callback and resume as in ``fine_tune``."""
    graph = distill_graph(teacher, student, temperature=temperature, alpha=alpha,
                          teacher_function=teacher_function, teacher_output=teacher_output)
    loop = _Loop(epochs=epochs, batch_size=batch_size, seed=seed,
                 label=f"distill {teacher} -> {student}", kind="distill", x_val=x_val,
                 y_val=y_val, order=order, sampler=sampler, batches=batches,
                 callback=callback, on_epoch=on_epoch, resume=resume,
                 checkpoint=_path(checkpoint, checkpoint_path), progress=progress,
                 console=console, recipe={"teacher": teacher, "temperature": temperature,
                                          "alpha": alpha})
    client.register(graph)

    def step(xb: np.ndarray, yb: np.ndarray) -> Mapping[str, np.ndarray]:
        return client.run(graph.name, {"x": xb, "labels": yb})

    try:
        return _epochs(client, student, DISTILL_STEP, step, x, y, loop)
    finally:
        client.drop(graph.name)


def _x_shape(client: Client, worker: str, function: str) -> list[int | None] | None:
    """The x shape the worker's step function declares (None when it does not say)."""
    spec = client.functions(worker).get(function)
    inputs = spec.get("inputs") if spec else None
    return inputs[0].get("shape") if inputs else None


def _resume(client: Client, worker: str, loop: _Loop, plan: Plan) -> tuple[int, list[Metrics]]:
    """Load the checkpoint into the worker; (the first epoch to run, the history so far)."""
    if loop.checkpoint is None:
        raise BadArgumentError("resume=True needs checkpoint=PATH (where an earlier run saved)")
    where = ckpt.files(loop.checkpoint).scalars
    record = ckpt.read(loop.checkpoint)
    if record.get("batch_size") != loop.batch_size:
        raise BadArgumentError(f"{where}: key batch_size is {record.get('batch_size')}, this run's "
                         f"is {loop.batch_size}: resume with the same batch size")
    try:
        plan.restore(record["order"])
    except ValueError as exc:
        raise BadArgumentError(f"{where}: key order: {exc}") from None
    start = int(record["epoch"]) + 1
    plan.check(start, loop.epochs)  # before the load: a refused run leaves the worker as it was
    ckpt.load(client, worker, loop.checkpoint)
    return start, list(record.get("history") or [])


def _epochs(client: Client, worker: str, function: str, step: Step, x: Any, y: Any,
            loop: _Loop) -> list[Metrics]:
    """The epoch loop shared by fine_tune and distill: plan, step, aggregate, validate, save."""
    if (loop.x_val is None) != (loop.y_val is None):
        raise BadArgumentError("give both x_val and y_val, or neither")
    x_shape = _x_shape(client, worker, function) if loop.batches is not None else None
    plan, samples = make_plan(x, y, batch_size=loop.batch_size, seed=loop.seed,
                              order=loop.order, sampler=loop.sampler, batches=loop.batches,
                              x_shape=x_shape)
    if loop.resume:
        start, saved = _resume(client, worker, loop, plan)
    else:
        start, saved = 1, []
        plan.check(start, loop.epochs)
    history: list[Metrics] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  console=loop.console, disable=not loop.progress, transient=True) as bar:
        task = bar.add_task(loop.label, total=None, info="")
        for epoch in range(start, loop.epochs + 1):
            count, source = plan.epoch(epoch)
            bar.reset(task, total=count, description=f"{loop.label} epoch {epoch}/{loop.epochs}",
                      info="")
            rec = _one_epoch(epoch, step, source, lambda info: bar.update(task, advance=1,
                                                                          info=info))
            if loop.x_val is not None and loop.y_val is not None:
                val = evaluate(client, worker, loop.x_val, loop.y_val)
                rec = replace(rec, val_loss=val["loss"], val_accuracy=val["accuracy"])
            if loop.checkpoint is not None:
                scalars = {"kind": loop.kind, "epoch": epoch, "epochs": loop.epochs,
                           "step": rec.step, "seed": loop.seed, "batch_size": loop.batch_size,
                           "samples": samples, "order": plan.state(), "recipe": loop.recipe,
                           "history": [*saved, *history, rec.as_dict()]}
                rec = replace(rec, version=ckpt.save(client, worker, loop.checkpoint, scalars))
            history.append(rec.as_dict())
            if loop.on_epoch is not None:
                loop.on_epoch(rec.as_dict())
            if loop.callback is not None:
                loop.callback(rec)
    return history


def _one_epoch(epoch: int, step: Step, source: Iterator[tuple[np.ndarray, np.ndarray]],
               tick: Callable[[str], None]) -> EpochRecord:
    t0 = time.perf_counter()
    loss = acc = 0.0
    samples = last_step = 0
    losses: list[float] = []
    for xb, yb in source:
        out = step(xb, yb)
        losses.append(float(out["loss"]))
        loss += losses[-1] * len(xb)
        acc += float(out["accuracy"]) * len(xb)
        samples += len(xb)
        last_step = int(out["step"])
        tick(f"loss {loss / samples:.4f} acc {acc / samples:.4f}")
    return EpochRecord(epoch=epoch, loss=loss / samples, accuracy=acc / samples,
                       steps=len(losses), step=last_step, samples=samples,
                       seconds=time.perf_counter() - t0, losses=tuple(losses))
