"""Model operations across frameworks on real workers: neutral model graphs, compatibility
reports (Keras vs torch twins, ONNX vs torch), cross-framework parameter copies whose
outputs then agree within 1e-5, and the `interop compat` / `copy-params` commands."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("onnx")
pytest.importorskip("interop_tensorflow")
pytest.importorskip("interop_torch")
pytest.importorskip("interop_onnxruntime")

from interop_runtime import Client, ClusterSpec, LocalCluster, ops
from interop_runtime.ops.compat.modelgraph import ModelGraph
from interop_runtime.ops.compat.render import to_dot, to_mermaid
from interop_runtime.ops.compat.report import CompatReport, Step, compare
from interop_runtime.ops.params.mapping import apply_steps

IMAGE = 6  # pooled 3x3x4: unequal sides, so a wrong row permutation cannot pass by symmetry
CNN_INPUTS = [{"name": "image", "dtype": "float32", "shape": [None, 3, IMAGE, IMAGE],
               "layout": "NCHW"}]


@pytest.fixture(scope="module")
def onnx_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from interop_torch.models import tiny_mlp

    path = tmp_path_factory.mktemp("compat") / "mlp.onnx"
    with warnings.catch_warnings():  # the exporter's own deprecation notices
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(tiny_mlp(seed=2), (torch.zeros(2, 8),), dynamo=True,
                                    input_names=["x"], output_names=["y"],
                                    dynamic_shapes=({0: "batch"},), verbose=False)
    program.save(str(path))
    return path


@pytest.fixture(scope="module")
def cluster(onnx_mlp: Path) -> Iterator[LocalCluster]:
    # one cluster for the module: five framework workers start once, in parallel
    def keras(name: str, **kwargs: Any) -> dict[str, Any]:
        return {"factory": f"interop_tensorflow.models:{name}", "kwargs": kwargs}

    def torch_model(name: str, **kwargs: Any) -> dict[str, Any]:
        return {"factory": f"interop_torch.models:{name}", "kwargs": kwargs}

    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 1.0}, "workers": [
        {"name": "keras_mlp", "plugin": "tensorflow", "config": keras("tiny_mlp", seed=1)},
        # no declared inputs: the plugin guesses (batch, 8) from the first Linear
        {"name": "torch_mlp", "plugin": "torch", "config": torch_model("tiny_mlp", seed=2)},
        {"name": "keras_cnn", "plugin": "tensorflow",
         "config": keras("tiny_cnn", seed=1, image_size=IMAGE)},
        {"name": "torch_cnn", "plugin": "torch",
         "config": {**torch_model("tiny_cnn", seed=2, image_size=IMAGE), "inputs": CNN_INPUTS}},
        {"name": "onnx_mlp", "plugin": "onnxruntime", "config": {"model": str(onnx_mlp)}},
    ]})
    with LocalCluster(spec) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with cluster.client(timeout_s=60.0) as c:
        yield c


def forward(client: Client, worker: str, x: np.ndarray) -> np.ndarray:
    fn = next(f for f in client.functions(worker).values() if f["name"] in ("forward", "run"))
    out = client.call(worker, fn["name"], {fn["inputs"][0]["name"]: x})
    return next(iter(out.values()))


def transforms(report: CompatReport) -> dict[tuple[str, str], list[str]]:
    return {(p.a, p.b): [s.describe() for s in p.transform] for p in report.params}


# --- reports ---------------------------------------------------------------------------------

def test_mlp_report_pairs_dense_kernels_with_transposed_linear_weights(client: Client) -> None:
    r = ops.compat(client, "keras_mlp", "torch_mlp")
    assert r.structure_matches and r.verdict.compatible and r.verdict.equivalent
    assert [b.types_a for b in r.alignment] == [["linear", "relu", "linear"]]
    assert transforms(r) == {("hidden/kernel", "hidden.weight"): ["transpose(1, 0)"],
                             ("hidden/bias", "hidden.bias"): [],
                             ("y/kernel", "y.weight"): ["transpose(1, 0)"],
                             ("y/bias", "y.bias"): []}
    assert all(p.ok for p in r.params) and not r.unmatched_a and not r.unmatched_b
    assert [(p.kind, p.fits) for p in r.io] == [("input", True), ("output", True)]
    assert r.io[0].a.shape == r.io[0].b.shape == [None, 8]
    assert json.loads(r.to_json())["verdict"]["compatible"] is True


def test_cnn_report_transposes_convs_maps_batchnorm_and_permutes_flattened_rows(
        client: Client) -> None:
    r = ops.compat(client, "keras_cnn", "torch_cnn")
    assert r.structure_matches and r.verdict.compatible and r.verdict.equivalent, r.verdict
    assert [b.types_b for b in r.alignment] == [
        ["conv2d", "batchnorm", "relu", "maxpool2d", "linear"]]
    assert transforms(r) == {
        ("conv/kernel", "conv.weight"): ["transpose(3, 2, 0, 1)"],
        ("conv/bias", "conv.bias"): [],
        ("bn/gamma", "bn.weight"): [], ("bn/beta", "bn.bias"): [],
        ("bn/moving_mean", "bn.running_mean"): [], ("bn/moving_variance", "bn.running_var"): [],
        ("logits/kernel", "logits.weight"): ["regroup axis 0 (3, 3, 4) -> (2, 0, 1)",
                                             "transpose(1, 0)"],
        ("logits/bias", "logits.bias"): []}
    assert r.ignored_b == ["bn.num_batches_tracked"]
    image = r.io[0]
    assert image.fits and image.transpose == [0, 3, 1, 2]
    assert (image.a.layout, image.b.layout) == ("NHWC", "NCHW")


def test_onnx_graph_of_the_exported_torch_mlp_matches_torch(client: Client) -> None:
    graph = ModelGraph.model_validate(client.model_graph("onnx_mlp"))
    assert graph.framework == "onnx" and [o.framework_type for o in graph.ops] == [
        "Gemm", "Relu", "Gemm"]
    r = ops.compat(client, "onnx_mlp", "torch_mlp")
    assert r.structure_matches and r.verdict.compatible and r.verdict.equivalent, r.verdict
    # torch.export keeps torch's names and Gemm(transB=1) keeps its (out, in) layout
    assert transforms(r) == {(n, n): [] for n in
                             ("hidden.weight", "hidden.bias", "y.weight", "y.bias")}
    np.testing.assert_array_equal(client.get_params("onnx_mlp")["y.weight"],
                                  client.get_params("torch_mlp")["y.weight"])


def test_mismatched_models_are_reported_not_compatible(client: Client) -> None:
    r = ops.compat(client, "keras_mlp", "torch_cnn")
    assert not r.structure_matches and not r.verdict.compatible
    assert r.unmatched_b and any("no partner" in x for x in r.verdict.reasons)
    assert not all(p.fits for p in r.io)


def test_unknown_flatten_shape_is_taken_from_the_other_side(client: Client) -> None:
    from interop_torch.modelgraph import build
    from interop_torch.models import tiny_cnn

    # no declared input: FX tracing, no shapes on the torch side
    fx = build(tiny_cnn(image_size=IMAGE), None)
    assert fx.notes and fx.op("flatten") is not None
    r = compare(client.model_graph("keras_cnn"), fx, "keras", "fx")
    assert r.verdict.compatible, r.verdict
    assert transforms(r)[("logits/kernel", "logits.weight")][0].startswith(
        "regroup axis 0 (3, 3, 4)")


# --- copies ------------------------------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [("keras_mlp", "torch_mlp"), ("torch_mlp", "keras_mlp")])
def test_copy_mlp_params_gives_the_same_outputs(client: Client, src: str, dst: str) -> None:
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    _perturb(client, src)
    assert np.abs(forward(client, src, x) - forward(client, dst, x)).max() > 1e-3
    before = client.get_params(dst).version
    assert ops.copy_params(client, src, dst) == before + 1
    np.testing.assert_allclose(forward(client, src, x), forward(client, dst, x), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("src,dst", [("keras_cnn", "torch_cnn"), ("torch_cnn", "keras_cnn")])
def test_copy_cnn_params_gives_the_same_outputs(client: Client, src: str, dst: str) -> None:
    nhwc = np.random.default_rng(1).standard_normal((4, IMAGE, IMAGE, 3)).astype(np.float32)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    _perturb(client, src)
    ops.copy_params(client, src, dst)
    np.testing.assert_allclose(forward(client, "keras_cnn", nhwc),
                               forward(client, "torch_cnn", nchw), atol=1e-5, rtol=0)


def _perturb(client: Client, worker: str) -> None:
    """New values in every float parameter (variances stay positive), so a copy shows."""
    rng = np.random.default_rng(len(worker))
    params = client.get_params(worker)
    client.set_params(worker, {n: (a * rng.uniform(0.8, 1.2, a.shape) + 0.01).astype(a.dtype)
                               for n, a in params.items() if a.dtype.kind == "f"})


def test_copy_into_onnx_is_refused_cleanly(client: Client) -> None:
    from interop_runtime import UnsupportedError

    with pytest.raises(UnsupportedError):
        ops.copy_params(client, "torch_mlp", "onnx_mlp")


# --- drawing and the CLI -------------------------------------------------------------------------

def test_neutral_graph_draws_as_mermaid_and_dot(client: Client) -> None:
    graph = client.model_graph("keras_cnn")
    mermaid = to_mermaid(graph)
    assert mermaid.startswith("flowchart") and "conv<br/>conv2d" in mermaid
    assert '-- "image ?×6×6×3" -->' in mermaid
    dot = to_dot(graph)
    assert dot.startswith('digraph "tiny_cnn"') and dot.rstrip().endswith("}")


def test_cli_compat_table_json_and_draw_then_copy(cluster: LocalCluster) -> None:
    from typer.testing import CliRunner

    from interop_runtime.cli.app import app

    runner = CliRunner()
    addr = ["-c", cluster.address]
    res = runner.invoke(app, ["compat", "keras_cnn", "torch_cnn", *addr], env=cluster.connection())
    assert res.exit_code == 0, res.output
    assert "compatible for parameter transfer" in res.output and "transpose(3, 2, 0, 1)" in res.output
    res = runner.invoke(app, ["compat", "keras_mlp", "torch_mlp", "--json", *addr], env=cluster.connection())
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["structure_matches"] is True
    res = runner.invoke(app, ["compat", "keras_mlp", "torch_mlp", "--draw", "mermaid", *addr], env=cluster.connection())
    assert res.exit_code == 0 and res.output.startswith("flowchart")
    res = runner.invoke(app, ["compat", "keras_mlp", "torch_cnn", *addr], env=cluster.connection())
    assert res.exit_code == 4 and "not compatible" in res.output
    res = runner.invoke(app, ["copy-params", "torch_mlp", "keras_mlp", *addr], env=cluster.connection())
    assert res.exit_code == 0 and "copied 4 parameter(s)" in res.output, res.output


# --- transforms, without workers ---------------------------------------------------------------

def test_regroup_matches_the_nhwc_to_nchw_flatten_formula() -> None:
    h, w, c, out = 2, 3, 5, 7
    kernel = np.random.default_rng(2).standard_normal((h * w * c, out))  # Keras (in, out)
    steps = [Step(op="regroup", dim=0, shape=[h, w, c], axes=[2, 0, 1]),
             Step(op="transpose", axes=[1, 0])]
    weight = apply_steps(kernel, steps)  # torch (out, in) over an NCHW flatten
    for ci, hi, wi in np.ndindex(c, h, w):
        np.testing.assert_array_equal(weight[:, ci * h * w + hi * w + wi],
                                      kernel[hi * w * c + wi * c + ci])
    back = [s.inverse() for s in reversed(steps)]
    np.testing.assert_array_equal(apply_steps(weight, back), kernel)
