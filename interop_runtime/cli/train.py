"""`interop train ...`: fine-tune a worker, or distill a teacher worker into a student
(registered by app.py). The optimizer lives in the worker (its config's ``training:``
section); these commands stream the data as batches, show a progress bar and print a row
per epoch. ``--checkpoint`` saves parameters, optimizer state and the batch order after
every epoch; ``--resume`` continues from there; ``--order FILE`` fixes the batch order."""

# no `from __future__ import annotations`: typer reads the option types at runtime
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from interop_runtime.cli.common import (
    DEFAULT_ADDRESS,
    CoordKeyOpt,
    CoordOpt,
    KeyOpt,
    client_session,
    console,
)

train_app = typer.Typer(help="Train workers that have a `training:` config section: "
                             "fine-tune, distill.", no_args_is_help=True)

DataOpt = Annotated[str, typer.Option("--data", help="`digits` (scikit-learn's, built in) or "
                                                     "an .npz file with arrays x and y "
                                                     "(optionally x_val, y_val).")]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Passes over the data.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Samples per step.")]
ValOpt = Annotated[float, typer.Option("--val-fraction", help="Held out for validation when "
                                                              "the data has no x_val/y_val.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the split and the batch order.")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", help="Save the trained worker's parameters here (.safetensors) after "
                         "every epoch, its optimizer state beside it (.optimizer.safetensors) "
                         "and the loop's scalars (.json).")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue from --checkpoint: parameters, optimizer state and batch "
                     "order; --epochs counts the epochs already done.")]
OrderOpt = Annotated[Path | None, typer.Option(
    "--order", help="A .npy of sample indices into the training split: 1-d (every epoch) or "
                    "2-d (one row per epoch). Default: a shuffle seeded by --seed.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Request timeout (s).")]


def _session(coordinator: str, key: Path | None, coordinator_key: Path | None,
             timeout: float) -> Any:

    return client_session(coordinator, key, coordinator_key, timeout)


def _data(source: str, val_fraction: float, seed: int) -> Any:
    from interop_runtime.ops.training.data import load

    try:
        data = load(source, val_fraction, seed)
    except (ImportError, ValueError, OSError) as exc:
        console.print(f"[red]cannot load data:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"data {escape(source)}: {data.describe()}", soft_wrap=True)
    return data


def _order(path: Path | None, resume: bool, checkpoint: Path | None) -> Any:
    """The --order file's indices (checked against the data by the loop), read without pickle."""
    import numpy as np

    if resume and checkpoint is None:
        console.print("[red]error:[/red] --resume needs --checkpoint (where the earlier run "
                      "saved)", soft_wrap=True)
        raise typer.Exit(2)
    if path is None:
        return None
    try:
        order = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read --order {escape(str(path))}:[/red] {escape(str(exc))}",
                      soft_wrap=True)
        raise typer.Exit(2) from None
    if order.ndim not in (1, 2):
        console.print(f"[red]--order {escape(str(path))}:[/red] must be 1-d or 2-d, got shape "
                      f"{order.shape}", soft_wrap=True)
        raise typer.Exit(2)
    return order if order.ndim == 1 else list(order)


def _epoch_printer(title: str) -> tuple[Table, Callable[[dict[str, Any]], None]]:
    """A table to print at the end, and a callback that also prints each epoch as it ends."""

    table = Table("epoch", "loss", "acc", "val loss", "val acc", "step", "s", title=title)

    def on_epoch(m: dict[str, Any]) -> None:
        row = (str(m["epoch"]), f"{m['loss']:.4f}", f"{m['accuracy']:.4f}",
               f"{m['val_loss']:.4f}", f"{m['val_accuracy']:.4f}", str(m["step"]),
               f"{m['seconds']:.2f}")
        table.add_row(*row)
        console.print("epoch " + "  ".join(row[:5]), soft_wrap=True)

    return table, on_epoch


def register(app: typer.Typer) -> None:
    """Add the `train` sub-app to the main app."""

    app.add_typer(train_app, name="train")

    @train_app.command("finetune")
    def finetune_cmd(
        worker: Annotated[str, typer.Argument(help="The worker to train.")],
        data: DataOpt = "digits", epochs: EpochsOpt = 5, batch_size: BatchOpt = 32,
        val_fraction: ValOpt = 0.25, seed: SeedOpt = 0, checkpoint: CheckpointOpt = None,
        resume: ResumeOpt = False, order: OrderOpt = None,
        coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 60.0,
    ) -> None:
        """Train WORKER on the data with its own optimizer (CONTROL train_step per batch)."""
        from interop_runtime.ops.training.loops import fine_tune

        indices = _order(order, resume, checkpoint)
        split = _data(data, val_fraction, seed)
        table, on_epoch = _epoch_printer(f"fine-tune {worker}")
        with _session(coordinator, key, coordinator_key, timeout) as c:
            fine_tune(c, worker, split.x_train, split.y_train, epochs=epochs,
                      batch_size=batch_size, x_val=split.x_val, y_val=split.y_val, seed=seed,
                      order=indices, checkpoint=checkpoint, resume=resume, on_epoch=on_epoch,
                      console=console)
        console.print(table)
        if checkpoint is not None:
            console.print(f"checkpoint: {checkpoint}", soft_wrap=True)

    @train_app.command("distill")
    def distill_cmd(
        teacher: Annotated[str, typer.Argument(help="Worker serving `logits` (not updated).")],
        student: Annotated[str, typer.Argument(help="Worker to train (`distill_step`).")],
        data: DataOpt = "digits", epochs: EpochsOpt = 5, batch_size: BatchOpt = 32,
        temperature: Annotated[float, typer.Option("--temperature", help="Softmax "
                                                   "temperature T of both logits.")] = 4.0,
        alpha: Annotated[float, typer.Option("--alpha", help="Weight of the T²·KL term; "
                                             "1 - alpha weighs the hard-label CE.")] = 0.5,
        val_fraction: ValOpt = 0.25, seed: SeedOpt = 0, checkpoint: CheckpointOpt = None,
        resume: ResumeOpt = False, order: OrderOpt = None,
        coordinator: CoordOpt = DEFAULT_ADDRESS, key: KeyOpt = None,
        coordinator_key: CoordKeyOpt = None, timeout: TimeoutOpt = 60.0,
    ) -> None:
        """Train STUDENT on the labels and on TEACHER's logits, which go worker to worker."""
        from interop_runtime.ops.training.loops import distill, evaluate

        indices = _order(order, resume, checkpoint)
        split = _data(data, val_fraction, seed)
        table, on_epoch = _epoch_printer(f"distill {teacher} -> {student}")
        with _session(coordinator, key, coordinator_key, timeout) as c:
            distill(c, teacher, student, split.x_train, split.y_train, epochs=epochs,
                    temperature=temperature, alpha=alpha, batch_size=batch_size,
                    x_val=split.x_val, y_val=split.y_val, seed=seed, order=indices,
                    checkpoint=checkpoint, resume=resume, on_epoch=on_epoch, console=console)
            teacher_acc = evaluate(c, teacher, split.x_val, split.y_val)["accuracy"]
        console.print(table)
        console.print(f"teacher {escape(teacher)} held-out accuracy {teacher_acc:.4f}",
                      soft_wrap=True)
