"""Distillation across frameworks on scikit-learn's digits (ships with the package).

A Keras MLP teacher is trained in a TensorFlow worker with its own train_step; then two
identical PyTorch students (64 -> 16 -> 10, same seed, same batches) are trained in
PyTorch workers, one on the hard labels only and one distilled from the teacher (the
teacher's logits go from the TF worker straight to the torch worker, never through
this script). Prints a per-epoch table and the held-out accuracies.

    .venv/bin/python examples/distill/digits.py [--epochs 20] [--temperature 4] [--alpha 0.7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from interop_runtime import ClusterSpec, LocalCluster
from interop_runtime.ops.training.data import digits
from interop_runtime.ops.training.loops import distill, evaluate, fine_tune

console = Console()


def cluster_spec(seed: int, teacher_lr: float, student_lr: float, hidden: int) -> ClusterSpec:
    student = {"factory": "interop_torch.models:mlp",
               "kwargs": {"seed": seed, "in_features": 64, "hidden": hidden, "classes": 10},
               "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 64]}],
               "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 10]}],
               "threads": 1,
               "training": {"optimizer": "adam", "lr": student_lr}}
    return ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 1.0},
        "workers": [
            {"name": "teacher", "plugin": "tensorflow",
             "config": {"factory": "interop_tensorflow.models:mlp_classifier",
                        "kwargs": {"seed": seed, "in_dim": 64, "hidden": 128, "classes": 10},
                        "training": {"optimizer": "adam", "lr": teacher_lr}}},
            {"name": "student_hard", "plugin": "torch", "config": student},
            {"name": "student_kd", "plugin": "torch", "config": student},
        ]})


def epoch_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in ("epoch", "loss", "train acc", "val loss", "val acc", "s"):
        table.add_column(col, justify="right")
    for m in rows:
        table.add_row(str(m["epoch"]), f"{m['loss']:.4f}", f"{m['accuracy']:.3f}",
                      f"{m['val_loss']:.4f}", f"{m['val_accuracy']:.3f}", f"{m['seconds']:.2f}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="student epochs")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=16, help="student hidden units")
    ap.add_argument("--student-lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path, help="save the distilled student here")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args()

    data = digits(val_fraction=0.25, seed=a.seed)
    console.print(f"digits: {data.describe()}")
    common = {"batch_size": a.batch_size, "x_val": data.x_val, "y_val": data.y_val,
              "seed": a.seed, "progress": not a.no_progress, "console": console}
    t0 = time.perf_counter()
    with LocalCluster(cluster_spec(a.seed, 3e-3, a.student_lr, a.hidden)) as cluster, \
            cluster.client(timeout_s=60.0) as client:
        console.print(f"cluster up in {time.perf_counter() - t0:.1f}s at {cluster.address}")
        runs = {
            "teacher (Keras, TF worker)": fine_tune(
                client, "teacher", data.x_train, data.y_train, epochs=a.teacher_epochs, **common),
            "student, hard labels (torch)": fine_tune(
                client, "student_hard", data.x_train, data.y_train, epochs=a.epochs, **common),
            f"student, distilled T={a.temperature:g} alpha={a.alpha:g} (torch)": distill(
                client, "teacher", "student_kd", data.x_train, data.y_train, epochs=a.epochs,
                temperature=a.temperature, alpha=a.alpha, checkpoint_path=a.checkpoint,
                **common),
        }
        for title, rows in runs.items():
            console.print(epoch_table(title, rows))
        final = Table(title="held-out accuracy (digits, 25% split)")
        for col in ("model", "val acc", "val loss", "train time s"):
            final.add_column(col, justify="right" if col != "model" else "left")
        for (title, rows), worker in zip(runs.items(), ("teacher", "student_hard", "student_kd"),
                                         strict=True):
            check = evaluate(client, worker, data.x_val, data.y_val)
            final.add_row(title, f"{check['accuracy']:.4f}", f"{check['loss']:.4f}",
                          f"{sum(m['seconds'] for m in rows):.1f}")
        console.print(final)
    console.print(f"total {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
