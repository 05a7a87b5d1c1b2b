"""Training through workers: train_step with the optimizer in the worker (torch and
TensorFlow), checkpoints through PARAM as safetensors, and distillation from a Keras
teacher into a torch student with the teacher's logits going worker to worker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from interop_runtime.ops.training import spec as trainspec
from interop_runtime.ops.training.data import Split, stratified_split

pytest.importorskip("sklearn")
pytest.importorskip("interop_torch")
pytest.importorskip("interop_tensorflow")

from interop_runtime import (
    ClusterSpec,
    DTypeMismatchError,
    FunctionFailedError,
    LocalCluster,
    ShapeMismatchError,
    TensorSpec,
)
from interop_runtime.ops.training.data import digits
from interop_runtime.ops.training.loops import distill, distill_graph, evaluate, fine_tune, restore

STUDENT = {"factory": "interop_torch.models:mlp", "kwargs": {"seed": 0, "hidden": 16},
           "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 64]}],
           "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 10]}],
           "threads": 1, "training": {"optimizer": "adam", "lr": 0.003}}
TEACHER = {"factory": "interop_tensorflow.models:mlp_classifier",
           "kwargs": {"seed": 0, "hidden": 128}, "training": {"optimizer": "adam", "lr": 0.003}}


@pytest.fixture(scope="module")
def data() -> Split:
    return digits(val_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 0.5}, "workers": [
        {"name": "teacher", "plugin": "tensorflow", "config": TEACHER},
        {"name": "student", "plugin": "torch", "config": STUDENT},
        {"name": "student_kd", "plugin": "torch", "config": STUDENT},
    ]})
    with LocalCluster(spec) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Any]:
    with cluster.client(timeout_s=60.0) as c:
        yield c


@pytest.fixture(scope="module")
def teacher_history(client: Any, data: Split) -> list[dict[str, Any]]:
    """The Keras teacher, trained in its TensorFlow worker with its own train_step."""
    return fine_tune(client, "teacher", data.x_train, data.y_train, epochs=5,
                     x_val=data.x_val, y_val=data.y_val, progress=False)


# --- the contract, without workers -----------------------------------------------------------

def test_training_signatures_are_typed_with_a_dynamic_batch() -> None:
    fns = {f.name: f for f in trainspec.functions(
        TensorSpec(name="features", dtype="float32", shape=[8, 64]),
        TensorSpec(name="y", dtype="float32", shape=[8, 10]))}
    assert set(fns) == set(trainspec.FUNCTIONS)
    step = fns["distill_step"]
    assert [(s.name, s.dtype, s.shape) for s in step.inputs] == [
        ("x", "float32", [None, 64]), ("labels", "int64", [None]),
        ("soft_targets", "float32", [None, 10])]
    assert [(s.name, s.dtype, s.shape) for s in step.outputs] == [
        ("loss", "float32", []), ("accuracy", "float32", []), ("step", "int64", [])]
    assert [s.name for s in fns["train_step"].inputs] == ["x", "labels"]


def test_batch_checks_and_args() -> None:
    x = np.zeros((4, 64), np.float32)
    with pytest.raises(ShapeMismatchError):
        trainspec.check_batch({"x": x, "labels": np.zeros(3, np.int64)}, 10)
    with pytest.raises(DTypeMismatchError):
        trainspec.check_batch({"x": x, "labels": np.zeros(4, np.int64),
                               "soft_targets": np.zeros((4, 10))}, 10)
    with pytest.raises(ValueError, match="class ids"):
        trainspec.check_batch({"x": x, "labels": np.full(4, 10, np.int64)}, 10)
    assert trainspec.distill_args({}, with_soft=False) == (1.0, 0.0)
    assert trainspec.distill_args({"temperature": 4, "alpha": 0.7}, with_soft=True) == (4.0, 0.7)
    with pytest.raises(ValueError, match="alpha"):
        trainspec.distill_args({"alpha": 1.5}, with_soft=True)


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    y = np.repeat(np.arange(5), 10)
    split = stratified_split(np.arange(50.0)[:, None], y, 0.2, seed=1)
    assert len(split.x_val) == 10 and len(split.x_train) == 40
    assert set(split.y_val) == set(split.y_train) == set(range(5))
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # the import now fails
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        digits()


# --- fine-tuning ------------------------------------------------------------------------------

def test_torch_worker_fine_tunes_and_loss_falls(client: Any, data: Split) -> None:
    fns = client.functions("student")
    assert {"forward", *trainspec.FUNCTIONS} <= set(fns)
    before = client.get_params("student")
    history = fine_tune(client, "student", data.x_train, data.y_train, epochs=3,
                        x_val=data.x_val, y_val=data.y_val, progress=False)
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert history[0]["loss"] > history[-1]["loss"]
    assert history[-1]["val_accuracy"] > 0.5
    steps_per_epoch = -(-len(data.x_train) // 32)
    assert history[-1]["step"] == 3 * steps_per_epoch  # the worker counts optimizer steps
    after = client.get_params("student")
    assert any(not np.array_equal(before[n], after[n]) for n in before)
    # every optimizer step is a parameter write: readers see the version move
    assert after.version == before.version + 3 * steps_per_epoch


def test_tensorflow_worker_fine_tunes_and_loss_falls(teacher_history: list[dict[str, Any]]
                                                     ) -> None:
    assert [m["epoch"] for m in teacher_history] == [1, 2, 3, 4, 5]
    assert teacher_history[0]["loss"] > teacher_history[-1]["loss"]
    assert teacher_history[-1]["val_accuracy"] > 0.9


@pytest.mark.parametrize("worker", ["student", "teacher"])
def test_checkpoint_continue_restore_gives_back_params_and_outputs(
        client: Any, data: Split, tmp_path: Path, worker: str,
        teacher_history: list[dict[str, Any]]) -> None:
    path = tmp_path / f"{worker}.safetensors"
    fine_tune(client, worker, data.x_train[:256], data.y_train[:256], epochs=1, progress=False,
              checkpoint_path=path)
    saved = client.get_params(worker)
    saved_out = client.call(worker, "logits", {"x": data.x_val})["logits"]
    fine_tune(client, worker, data.x_train, data.y_train, epochs=1, seed=7, progress=False)
    moved = client.get_params(worker)
    assert any(not np.array_equal(saved[n], moved[n]) for n in saved)
    version = restore(client, worker, path)
    restored = client.get_params(worker)
    assert restored.version == version > saved.version
    assert set(restored) == set(saved)
    for name in saved:
        np.testing.assert_array_equal(restored[name], saved[name], err_msg=name)
    np.testing.assert_array_equal(client.call(worker, "logits", {"x": data.x_val})["logits"],
                                  saved_out)
    forward = client.call(worker, "forward", {"x": data.x_val})
    np.testing.assert_array_equal(next(iter(forward.values())), saved_out)


# --- distillation -----------------------------------------------------------------------------

def test_distill_tensorflow_teacher_into_torch_student(
        client: Any, data: Split, teacher_history: list[dict[str, Any]]) -> None:
    teacher_before = client.get_params("teacher")
    history = distill(client, "teacher", "student_kd", data.x_train, data.y_train, epochs=4,
                      temperature=4.0, alpha=0.7, x_val=data.x_val, y_val=data.y_val,
                      progress=False)
    assert [m["epoch"] for m in history] == [1, 2, 3, 4]
    for m in history:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "step", "seconds"} <= set(m)
    assert history[0]["loss"] > history[-1]["loss"]
    assert history[-1]["val_accuracy"] > 0.6  # chance is 0.1
    # the teacher only served logits: its parameters did not move
    teacher_after = client.get_params("teacher")
    for name in teacher_before:
        np.testing.assert_array_equal(teacher_after[name], teacher_before[name])
    teacher = evaluate(client, "teacher", data.x_val, data.y_val)
    print(f"\nteacher val acc {teacher['accuracy']:.4f}; distilled student after 4 epochs "
          f"{history[-1]['val_accuracy']:.4f}")


def test_distill_graph_is_validated_by_the_coordinator(client: Any) -> None:
    g = distill_graph("teacher", "student_kd", temperature=2.0, alpha=0.5)
    assert client.validate(g) == ["teacher", "student"]
    # the teacher's loss (a float32 scalar) cannot feed soft_targets (batch, 10)
    bad = distill_graph("teacher", "student_kd", temperature=2.0, alpha=0.5,
                        teacher_function="evaluate", teacher_output="loss")
    with pytest.raises(ShapeMismatchError):
        client.validate(bad)


# --- typed errors -------------------------------------------------------------------------------

def test_train_step_validates_dtypes_and_shapes(client: Any, data: Split) -> None:
    x, y = data.x_train[:8], data.y_train[:8]
    for worker in ("student", "teacher"):
        with pytest.raises(DTypeMismatchError):  # int32 labels: the signature says int64
            client.call(worker, "train_step", {"x": x, "labels": y.astype(np.int32)})
        with pytest.raises(DTypeMismatchError):
            client.call(worker, "train_step", {"x": x.astype(np.float64), "labels": y})
        with pytest.raises(ShapeMismatchError):  # 63 features, not 64
            client.call(worker, "train_step", {"x": x[:, :63], "labels": y})
        with pytest.raises(ShapeMismatchError):  # labels for another batch
            client.call(worker, "train_step", {"x": x, "labels": y[:5]})
        with pytest.raises(FunctionFailedError, match="class ids"):
            client.call(worker, "train_step", {"x": x, "labels": y + 10})
        with pytest.raises(DTypeMismatchError):  # soft targets through CONTROL are checked too
            client.call(worker, "train_step", {"x": x, "labels": y,
                                               "soft_targets": np.zeros((8, 10))}, alpha=0.5)


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_finetune_from_npz_and_distill(cluster: LocalCluster, tmp_path: Path,
                                           data: Split, teacher_history: Any) -> None:
    from typer.testing import CliRunner

    from interop_runtime.cli.app import app

    npz = tmp_path / "d.npz"
    np.savez(npz, x=data.x_train[:300], y=data.y_train[:300])
    ckpt = tmp_path / "cli.safetensors"
    runner = CliRunner()
    res = runner.invoke(app, ["train", "finetune", "student", "--data", str(npz), "--epochs",
                              "2", "--checkpoint", str(ckpt), "-c", cluster.address], env=cluster.connection())
    assert res.exit_code == 0, res.output
    assert ckpt.is_file() and "fine-tune student" in res.output
    res = runner.invoke(app, ["train", "distill", "teacher", "student_kd", "--data", "digits",
                              "--epochs", "1", "--temperature", "3", "--alpha", "0.5",
                              "-c", cluster.address], env=cluster.connection())
    assert res.exit_code == 0, res.output
    assert "teacher teacher held-out accuracy" in res.output
    res = runner.invoke(app, ["train", "finetune", "student", "--data", str(tmp_path / "no.npz"),
                              "-c", cluster.address], env=cluster.connection())
    assert res.exit_code == 2 and "cannot load data" in res.output
