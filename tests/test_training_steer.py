"""Steerable training: seeds, explicit orders, samplers and caller batches; typed epoch
records; checkpoints with the optimizer state that resume exactly; and distillation
through the runtime matching a plain in-process torch loop step for step."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")
pytest.importorskip("interop_torch")
pytest.importorskip("interop_tensorflow")

from safetensors.numpy import load_file, save_file
from torch.nn import functional as nnf

from interop_runtime import (
    ClusterSpec,
    DTypeMismatchError,
    LocalCluster,
    ShapeMismatchError,
    UnknownTargetError,
)
from interop_runtime.ops.training import checkpoint as ckpt
from interop_runtime.ops.training.data import Split, digits
from interop_runtime.ops.training.loops import distill, fine_tune
from interop_runtime.ops.training.record import EpochRecord

LR = 0.003
STUDENT = {"factory": "interop_torch.models:mlp", "kwargs": {"seed": 0, "hidden": 16},
           "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 64]}],
           "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 10]}],
           "threads": 1, "training": {"optimizer": "adam", "lr": LR}}
TEACHER = {"factory": "interop_tensorflow.models:mlp_classifier",
           "kwargs": {"seed": 0, "hidden": 32}, "training": {"optimizer": "adam", "lr": LR}}
N = 384  # training samples used: 12 steps of 32 per epoch keep the file quick


@pytest.fixture(scope="module")
def data() -> Split:
    return digits(val_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 0.5}, "workers": [
        {"name": "teacher", "plugin": "tensorflow", "config": TEACHER},
        {"name": "a", "plugin": "torch", "config": STUDENT},
        {"name": "b", "plugin": "torch", "config": STUDENT},
        {"name": "kd", "plugin": "torch", "config": STUDENT},
    ]})
    with LocalCluster(spec) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Any]:
    with cluster.client(timeout_s=60.0) as c:
        yield c


def _params(client: Any, worker: str) -> dict[str, np.ndarray]:
    return dict(client.get_params(worker))


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str,
                  **tol: float) -> None:
    assert set(got) == set(want), what
    for name in want:
        np.testing.assert_allclose(got[name], want[name], err_msg=f"{what}: {name}", **tol)


# --- step for step ---------------------------------------------------------------------------

def test_distill_matches_an_in_process_torch_loop_step_for_step(client: Any,
                                                                data: Split) -> None:
    """A Keras teacher (TF worker) into a torch student through the runtime, against the
    same recipe in plain torch: same init, same batch order, same Adam, same loss."""
    x, y = data.x_train[:N], data.y_train[:N]
    rng = np.random.default_rng(11)
    order = [rng.permutation(N), rng.permutation(N)[: N - 40]]  # the 2nd epoch: a subset
    init = _params(client, "kd")
    records: list[EpochRecord] = []
    after: list[dict[str, np.ndarray]] = []

    def on_epoch(rec: EpochRecord) -> None:
        records.append(rec)
        after.append(_params(client, "kd"))

    history = distill(client, "teacher", "kd", x, y, epochs=2, temperature=3.0, alpha=0.7,
                      order=order, callback=on_epoch, progress=False)
    assert [r.epoch for r in records] == [1, 2] and [m["epoch"] for m in history] == [1, 2]
    assert [r.steps for r in records] == [12, 11] and records[1].samples == N - 40

    # the same recipe in-process: the student's initial weights, torch's Adam, the order
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10))
    names = list(model.state_dict())
    assert names == list(init)
    model.load_state_dict({n: torch.from_numpy(init[n].copy()) for n in names})
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    t = 3.0
    for epoch, idx in enumerate(order):
        losses = []
        for start in range(0, len(idx), 32):
            b = idx[start:start + 32]
            soft = torch.from_numpy(client.call("teacher", "logits", {"x": x[b]})["logits"].copy())
            logits = model(torch.from_numpy(x[b]))
            kl = nnf.kl_div(nnf.log_softmax(logits / t, -1), nnf.log_softmax(soft / t, -1),
                          reduction="batchmean", log_target=True)
            loss = 0.7 * t * t * kl + 0.3 * nnf.cross_entropy(logits, torch.from_numpy(y[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        np.testing.assert_allclose(records[epoch].losses, losses, rtol=1e-5, atol=1e-6,
                                   err_msg=f"per-step losses of epoch {epoch + 1}")
        mine = {n: v.detach().numpy() for n, v in model.state_dict().items()}
        _assert_close(after[epoch], mine, f"student after epoch {epoch + 1}", rtol=1e-5,
                      atol=1e-6)
    # and the runtime did train: the parameters moved from their init
    assert any(not np.allclose(after[-1][n], init[n]) for n in init)


# --- checkpoints that resume -------------------------------------------------------------------

def test_resume_equals_an_uninterrupted_run(client: Any, data: Split, tmp_path: Path) -> None:
    """Twins a and b: a trains 2 epochs straight; b trains 1 epoch with a checkpoint, is
    then knocked off course (more steps, other order), and resumes for the 2nd epoch."""
    x, y = data.x_train[:N], data.y_train[:N]
    assert all(np.array_equal(v, _params(client, "b")[n]) for n, v in _params(client, "a").items())
    straight = fine_tune(client, "a", x, y, epochs=2, seed=5, progress=False)
    path = tmp_path / "b.safetensors"
    first = fine_tune(client, "b", x, y, epochs=1, seed=5, checkpoint=path, progress=False)
    f = ckpt.files(path)
    assert f.params.is_file() and f.optimizer.is_file() and f.scalars.is_file()
    record = json.loads(f.scalars.read_text())
    assert record["epoch"] == 1 and record["seed"] == 5 and record["order"]["kind"] == "shuffle"
    assert record["optimizer"]["optimizer"] == "adam" and record["optimizer"]["hyper"][0]["lr"] == LR
    optim = load_file(str(f.optimizer))
    assert {"0.weight/exp_avg", "0.weight/exp_avg_sq", "0.weight/step"} <= set(optim)
    assert not any(Path(p).suffix in (".pt", ".pkl") for p in tmp_path.iterdir())  # no pickle

    fine_tune(client, "b", x[::-1], y[::-1], epochs=1, seed=99, progress=False)  # off course
    resumed = fine_tune(client, "b", x, y, epochs=2, seed=5, checkpoint=path, resume=True,
                        progress=False)
    assert [m["epoch"] for m in first] == [1] and [m["epoch"] for m in resumed] == [2]
    assert resumed[0]["step"] == straight[1]["step"]  # the worker's step count came back too
    assert resumed[0]["loss"] == pytest.approx(straight[1]["loss"], rel=1e-5)
    _assert_close(_params(client, "b"), _params(client, "a"), "resumed vs straight",
                  rtol=1e-5, atol=1e-6)
    assert len(json.loads(f.scalars.read_text())["history"]) == 2


def test_keras_optimizer_state_round_trips(client: Any, data: Split, tmp_path: Path) -> None:
    """One TF worker: resuming the same checkpoint twice, with training in between that
    moves the parameters and Adam's slots, gives the same parameters both times."""
    x, y = data.x_train[:N], data.y_train[:N]
    path, copy = tmp_path / "t.safetensors", tmp_path / "copy.safetensors"
    fine_tune(client, "teacher", x, y, epochs=1, seed=2, checkpoint=path, progress=False)
    for a, b in zip(ckpt.files(path).__dict__.values(), ckpt.files(copy).__dict__.values(),
                    strict=True):
        shutil.copy(a, b)
    assert "adam/iteration" in load_file(str(ckpt.files(path).optimizer))
    fine_tune(client, "teacher", x, y, epochs=2, seed=2, checkpoint=path, resume=True,
              progress=False)
    once = _params(client, "teacher")
    fine_tune(client, "teacher", x, y, epochs=1, seed=3, progress=False)  # moves the slots
    fine_tune(client, "teacher", x, y, epochs=2, seed=2, checkpoint=copy, resume=True,
              progress=False)
    # TF on CPU (oneDNN, several threads) may reorder float sums: a tolerance, not equality
    _assert_close(_params(client, "teacher"), once, "keras resume", rtol=1e-4, atol=1e-5)


def test_a_checkpoint_of_another_model_is_refused_and_changes_nothing(
        client: Any, data: Split, tmp_path: Path) -> None:
    x, y = data.x_train[:64], data.y_train[:64]
    t = tmp_path / "teacher.safetensors"
    fine_tune(client, "teacher", x, y, epochs=1, checkpoint=t, progress=False)
    before = client.get_params("a")
    with pytest.raises(UnknownTargetError, match="teacher.safetensors"):
        fine_tune(client, "a", x, y, epochs=2, checkpoint=t, resume=True, progress=False)
    s = tmp_path / "a.safetensors"
    fine_tune(client, "a", x, y, epochs=1, checkpoint=s, progress=False)
    before = client.get_params("a")
    optim_file = ckpt.files(s).optimizer
    optim = load_file(str(optim_file))
    optim["2.weight/exp_avg"] = np.zeros((10, 15), np.float32)  # one hidden unit short
    save_file(optim, str(optim_file))
    with pytest.raises(ShapeMismatchError, match=r"a\.optimizer\.safetensors.*2\.weight/exp_avg"):
        fine_tune(client, "a", x, y, epochs=2, checkpoint=s, resume=True, progress=False)
    after = client.get_params("a")
    assert after.version == before.version  # nothing was written
    with pytest.raises(FileNotFoundError):
        fine_tune(client, "a", x, y, epochs=2, checkpoint=tmp_path / "none.safetensors",
                  resume=True, progress=False)


# --- steering: orders, samplers, batches ---------------------------------------------------------

def test_order_sampler_and_batches_give_the_same_steps(client: Any, data: Split,
                                                       tmp_path: Path) -> None:
    """From one saved state, an explicit order, a callable, a batch sampler and the
    caller's own (x, y) batches take exactly the same steps."""
    x, y = data.x_train[:N], data.y_train[:N]
    idx = np.random.default_rng(4).permutation(N)
    cuts = [idx[i:i + 32] for i in range(0, N, 32)]
    start = tmp_path / "start.safetensors"
    fine_tune(client, "a", x, y, epochs=1, checkpoint=start, progress=False)
    runs: dict[str, list[float]] = {}
    for how, kw in {"order": {"order": [idx]}, "callable": {"order": lambda epoch: idx},
                    "sampler": {"sampler": [c.tolist() for c in cuts]},
                    "batches": {"batches": [(x[c], y[c]) for c in cuts]}}.items():
        ckpt.load(client, "a", start)
        got: list[EpochRecord] = []
        args = (None, None) if how == "batches" else (x, y)
        fine_tune(client, "a", *args, epochs=1, callback=got.append, progress=False, **kw)
        runs[how] = list(got[0].losses)
    assert len(runs["order"]) == 12
    for how, losses in runs.items():
        assert losses == runs["order"], how


def test_bad_orders_and_batches_are_typed_errors_before_any_step(client: Any,
                                                                 data: Split) -> None:
    x, y = data.x_train[:64], data.y_train[:64]
    version = client.get_params("b").version
    with pytest.raises(UnknownTargetError, match=r"order\[1\]\[2\] is 64") as err:
        fine_tune(client, "b", x, y, epochs=2, order=[np.arange(64), np.array([0, 1, 64])],
                  progress=False)
    assert err.value.field == "order[1][2]"
    with pytest.raises(DTypeMismatchError, match="integer"):
        fine_tune(client, "b", x, y, epochs=1, order=[np.linspace(0, 1, 8)], progress=False)
    with pytest.raises(ShapeMismatchError, match="epoch 2"):
        fine_tune(client, "b", x, y, epochs=2, order=[np.arange(64)], progress=False)
    assert client.get_params("b").version == version  # refused before the first step
    with pytest.raises(ShapeMismatchError, match=r"batches\[epoch 1\]\[1\]\.x has shape"):
        fine_tune(client, "b", batches=[(x[:8], y[:8]), (x[:8, :63], y[:8])], epochs=1,
                  progress=False)
    with pytest.raises(ShapeMismatchError, match=r"batches\[epoch 1\]\[0\]\.y"):
        fine_tune(client, "b", batches=[(x[:8], y[:5])], epochs=1, progress=False)
    one_shot = ((x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8))
    with pytest.raises(ValueError, match="one-shot"):
        fine_tune(client, "b", batches=one_shot, epochs=2, progress=False)


def test_callback_gets_typed_records_and_the_default_order_follows_the_seed(
        client: Any, data: Split, tmp_path: Path) -> None:
    x, y = data.x_train[:N], data.y_train[:N]
    start = tmp_path / "s.safetensors"
    fine_tune(client, "b", x, y, epochs=1, checkpoint=start, progress=False)
    seen: dict[int, list[float]] = {}
    for seed in (1, 1, 2):
        ckpt.load(client, "b", start)
        got: list[EpochRecord] = []
        fine_tune(client, "b", x, y, epochs=1, seed=seed, callback=got.append, progress=False)
        rec = got[0]
        assert isinstance(rec, EpochRecord) and rec.steps == 12 and rec.samples == N
        assert 0.0 <= rec.accuracy <= 1.0 and rec.loss > 0
        if seed in seen:
            assert list(rec.losses) == seen[seed]  # same seed, same batches, same steps
        seen.setdefault(seed, list(rec.losses))
    assert seen[1] != seen[2]


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_checkpoint_resume_and_order(cluster: LocalCluster, tmp_path: Path,
                                         data: Split) -> None:
    from typer.testing import CliRunner

    from interop_runtime.cli.app import app

    npz = tmp_path / "d.npz"
    np.savez(npz, x=data.x_train[:200], y=data.y_train[:200])
    path = tmp_path / "cli.safetensors"
    runner, env, at = CliRunner(), cluster.connection(), ["-c", cluster.address]
    base = ["train", "finetune", "a", "--data", str(npz), "--checkpoint", str(path), *at]
    res = runner.invoke(app, [*base, "--epochs", "1"], env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--epochs", "2", "--resume"], env=env)
    assert res.exit_code == 0, res.output
    assert "epoch 2" in res.output and "epoch 1 " not in res.output
    assert json.loads(ckpt.files(path).scalars.read_text())["epoch"] == 2
    bad = tmp_path / "order.npy"
    np.save(bad, np.array([0, 1, 5000]))
    res = runner.invoke(app, ["train", "finetune", "a", "--data", str(npz), "--order", str(bad),
                              *at], env=env)
    assert res.exit_code == 1 and "order[0][2] is 5000" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["train", "finetune", "a", "--resume", *at], env=env)
    assert res.exit_code == 2 and "--resume needs --checkpoint" in res.output
