"""Migration through ONNX on real workers: torch and Keras models exported where they live,
served by an onnxruntime worker, outputs compared (interop_runtime.migration / parity)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from interop_runtime.ops.migration.parity import Tolerance, compare, compare_output

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("interop_torch")
pytest.importorskip("interop_tensorflow")
pytest.importorskip("interop_onnxruntime")

from interop_runtime.ops.migration.migrate import (
    example_inputs,
    export_onnx,
    migrate,
    onnx_worker,
    write_onnx,
)

# raised inside torch.onnx.export on torch 2.13; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`:FutureWarning")

MLP_IO = {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 8]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 4]}]}
CNN_IO = {"inputs": [{"name": "image", "dtype": "float32", "shape": [None, 3, 8, 8]}],
          "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 5]}]}
WORKERS: list[dict[str, Any]] = [
    {"name": "t_mlp", "plugin": "torch", "config": {
        "factory": "interop_torch.models:tiny_mlp", "export": True, **MLP_IO}},
    {"name": "t_cnn", "plugin": "torch", "config": {
        "factory": "interop_torch.models:tiny_cnn", "export": True, **CNN_IO}},
    {"name": "k_mlp", "plugin": "tensorflow", "config": {
        "factory": "interop_tensorflow.models:tiny_mlp", "export": True}},
    {"name": "k_cnn", "plugin": "tensorflow", "config": {
        "factory": "interop_tensorflow.models:tiny_cnn", "export": True}},
    {"name": "plain", "plugin": "torch", "config": {"factory": "interop_torch.models:tiny_mlp",
                                                     **MLP_IO}},  # no export: true
]


@pytest.fixture(scope="module")
def cluster() -> Any:
    from interop_runtime import ClusterSpec, LocalCluster

    # plain text: migrate() starts its temporary onnxruntime worker without keys (on a CURVE
    # cluster the operator starts one with its own key and passes target_worker)
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 0.5, "curve": False},
                                       "workers": WORKERS})
    with LocalCluster(spec) as c:
        yield c


def ort_run(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


# --- parity on its own (numpy only) -------------------------------------------------------

def test_parity_numbers_and_rules() -> None:
    ref = np.array([1.0, -2.0, 0.0, 1e-8], np.float32)
    cand = np.array([1.0005, -2.0, 2e-5, 2e-8], np.float32)
    o = compare_output("y", ref, cand, Tolerance())
    diff = np.abs(cand.astype(np.float64) - ref)
    assert o.max_abs_err == pytest.approx(diff.max())
    # the 1e-8 reference is below the floor: divided by 1e-6, not by 1e-8
    assert o.max_rel_err == pytest.approx(max(diff[0] / 1.0, diff[2] / 1e-6, diff[3] / 1e-6))
    # 0 vs 2e-5 exceeds atol=1e-5; 1.0005 is within rtol=1e-3
    assert (o.mismatched, o.total, o.passed) == (1, 4, False)
    assert compare_output("y", ref, cand, Tolerance(atol=1e-4)).passed
    assert compare_output("y", ref, ref[:2], Tolerance()).problem == "shape [2] != [4]"
    report = compare({"a": ref, "b": ref}, {"a": ref}, source="s", target="t")
    assert not report.passed and report.outputs[1].problem.startswith("missing")
    positional = compare({"y": ref}, {"out0": ref}, source="s", target="t")
    assert positional.passed and positional.outputs[0].candidate_name == "out0"
    assert json.loads(positional.to_json())["passed"] is True


# --- end to end -----------------------------------------------------------------------------

@pytest.mark.parametrize("worker,exporter", [
    ("t_mlp", "torch.onnx.export(dynamo=True)"), ("t_cnn", "torch.onnx.export(dynamo=True)"),
    ("k_mlp", "tf2onnx.convert.from_keras"), ("k_cnn", "tf2onnx.convert.from_keras")])
def test_migrate_parity_passes(cluster: Any, tmp_path: Path, worker: str, exporter: str) -> None:
    out = tmp_path / f"{worker}.onnx"
    with cluster.client(timeout_s=120) as c:
        inputs = example_inputs(c.functions(worker)["forward"], batch=3, seed=1)
        report = migrate(c, worker, out, inputs)
        reference = c.call(worker, "forward", inputs)
    assert report.passed, report.to_json()
    assert report.exporter == exporter and report.notes == []
    assert report.direction == ("torch" if worker.startswith("t_") else "keras") + " -> onnx"
    assert report.onnx_bytes == out.stat().st_size and report.opset
    # the report's numbers are the real differences: recompute them in this process
    direct = ort_run(out, inputs)
    for o in report.outputs:
        diff = np.abs(direct[o.name].astype(np.float64) - reference[o.name])
        assert o.max_abs_err == pytest.approx(diff.max(), abs=1e-9)
        assert o.shape == [3, *o.shape[1:]] and o.mismatched == 0
    print(f"{worker}: {exporter} max abs {report.outputs[0].max_abs_err:.3g} "
          f"max rel {report.outputs[0].max_rel_err:.3g}")


def test_dynamic_batch_survives_export(cluster: Any, tmp_path: Path) -> None:
    with cluster.client(timeout_s=120) as c:
        exported = export_onnx(c, "t_cnn")
        path = write_onnx(tmp_path / "cnn.onnx", exported.data)
        for batch in (1, 7):
            inputs = example_inputs(c.functions("t_cnn")["forward"], batch=batch)
            assert ort_run(path, inputs)["logits"].shape == (batch, 5)


def test_perturbed_model_fails_parity(cluster: Any, tmp_path: Path) -> None:
    with cluster.client(timeout_s=120) as c:
        path = write_onnx(tmp_path / "mlp.onnx", export_onnx(c, "t_mlp").data)
        inputs = example_inputs(c.functions("t_mlp")["forward"], batch=4)
        params = c.get_params("t_mlp", ["y.bias"])
        c.set_params("t_mlp", {"y.bias": params["y.bias"] + np.float32(0.05)})
        try:
            with onnx_worker(c.address, path, "t_mlp-onnx-old") as target:
                report = compare(c.call("t_mlp", "forward", inputs),
                                 c.call(target, "run", inputs), source="t_mlp.forward",
                                 target=f"{target}.run")
        finally:
            c.set_params("t_mlp", {"y.bias": params["y.bias"]})
    [y] = report.outputs
    assert not report.passed and not y.passed
    assert y.mismatched == y.total == 16
    assert y.max_abs_err == pytest.approx(0.05, rel=1e-4)
    from rich.console import Console

    console = Console(record=True, width=140)
    console.print(report.table())
    assert "FAIL" in console.export_text()


def test_migrate_needs_export_enabled(cluster: Any, tmp_path: Path) -> None:
    from interop_runtime import InteropError

    with cluster.client() as c, pytest.raises(InteropError, match="export: true"):
        migrate(c, "plain", tmp_path / "x.onnx")


def test_cli_migrate(cluster: Any, tmp_path: Path) -> None:
    out = tmp_path / "k_cnn.onnx"
    cmd = [sys.executable, "-m", "interop_runtime", "migrate", "k_cnn", "--to", "onnx",
           "--out", str(out), "-c", cluster.address, "--batch", "5", "--json"]
    env = {**os.environ, **cluster.connection()}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["inputs"] == {"image": [5, 8, 8, 3]}
    assert out.is_file() and report["onnx_path"] == str(out)
    table = subprocess.run([*cmd[:-1]], capture_output=True, text=True, timeout=180, env=env,
                           check=False)
    assert table.returncode == 0 and "PASS" in table.stdout
    refused = subprocess.run([*cmd[:4], "plain", *cmd[5:-1]], capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 2 and "export: true" in refused.stdout


def test_onnx_to_torch_worker(cluster: Any, tmp_path: Path) -> None:
    """Keras CNN -> ONNX (tf2onnx) -> torch worker (onnx2torch, installed --no-deps)."""
    import importlib.util

    if importlib.util.find_spec("onnx2torch") is None:  # importing it needs our stand-in
        pytest.skip("onnx2torch is not installed (pip install --no-deps onnx2torch)")
    from interop_runtime import WorkerSpec

    with cluster.client(timeout_s=120) as c:
        path = write_onnx(tmp_path / "k_cnn.onnx", export_onnx(c, "k_cnn").data)
        cluster.start_worker(WorkerSpec(name="t_from_onnx", plugin="torch",
                                        config={"onnx": str(path)}))
        cluster.wait_ready(["t_from_onnx"])
        fn = c.functions("t_from_onnx")["forward"]
        assert [i["name"] for i in fn["inputs"]] == ["image"]
        inputs = example_inputs(c.functions("k_cnn")["forward"], batch=3)
        report = compare(c.call("k_cnn", "forward", inputs), c.call("t_from_onnx", "forward",
                                                                     inputs),
                         source="k_cnn.forward", target="t_from_onnx.forward")
    assert report.passed, report.to_json()
    print(f"keras cnn -> onnx -> torch: max abs {report.outputs[0].max_abs_err:.3g}")
