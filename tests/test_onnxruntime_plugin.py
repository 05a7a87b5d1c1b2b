"""The onnxruntime worker plugin: a torch model exported to ONNX, served by a worker.

The model is exported with ``torch.onnx.export(..., dynamo=True)``: on torch 2.13
with onnxscript installed the torch.export-based exporter works and is the
default path; the TorchScript-based one (dynamo=False) is deprecated with it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("interop_onnxruntime")
pytest.importorskip("interop_torch")

# raised inside torch.onnx.export on torch 2.13; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`:FutureWarning")

from onnx import TensorProto, helper
from torch import nn

from interop_onnxruntime import OnnxRuntimePlugin
from interop_runtime import (
    DeviceUnavailable,
    Graph,
    InteropError,
    PluginUnavailable,
    ShapeMismatchError,
    UnknownFunctionError,
    UnknownTargetError,
    UnsupportedError,
    to_numpy_dtype,
)
from interop_runtime.worker.plugin import create_plugin

NO_CUDA_EP = pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                                reason="this test needs onnxruntime without CUDA")


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(img)).mean((2, 3)))


def images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Classifier]:
    torch.manual_seed(0)
    model = Classifier().eval()
    path = tmp_path_factory.mktemp("onnx") / "classifier.onnx"
    torch.onnx.export(model, (torch.from_numpy(images()),), str(path), dynamo=True,
                      input_names=["img"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return path, model


def load(config: dict[str, Any], device: str = "cpu") -> OnnxRuntimePlugin:
    plugin = OnnxRuntimePlugin()
    plugin.load(config, device)
    return plugin


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(np.array(x))).numpy()  # run outputs are read-only


# --- in process --------------------------------------------------------------------------------

def test_signature_comes_from_the_model(exported: tuple[Path, Classifier]) -> None:
    [fn] = load({"model": str(exported[0])}).describe()
    assert fn.name == "run"
    [img] = fn.inputs
    assert (img.name, img.dtype, img.shape, img.layout) == ("img", "float32", [None, 3, 8, 8],
                                                            "NCHW")
    [logits] = fn.outputs
    assert (logits.name, logits.dtype, logits.shape) == ("logits", "float32", [None, 2])


def test_run_matches_torch_and_accepts_read_only_frames(exported: tuple[Path, Classifier]
                                                        ) -> None:
    path, model = exported
    plugin = load({"model": str(path), "intra_op_threads": 1})
    x = images(5)
    frame = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(x.shape)  # read-only
    out = plugin.call("run", {"img": frame}, {})
    np.testing.assert_allclose(out["logits"], torch_out(model, x), rtol=0, atol=1e-5)
    with pytest.raises(UnknownFunctionError, match="only 'run'"):
        plugin.call("forward", {"img": x}, {})
    with pytest.raises(UnsupportedError, match="takes no arguments"):
        plugin.call("run", {"img": x}, {"scale": 2})


def test_params_are_the_initializers_and_read_only(exported: tuple[Path, Classifier]) -> None:
    path, model = exported
    plugin = load({"model": str(path)})
    params = plugin.get_params(None)
    for name, value in model.state_dict().items():  # the dynamo exporter keeps the FQNs
        np.testing.assert_array_equal(params[name], value.numpy())
    assert list(plugin.get_params(["fc.bias"])) == ["fc.bias"]
    with pytest.raises(UnknownTargetError, match="nope"):
        plugin.get_params(["nope"])
    with pytest.raises(UnsupportedError, match="fixed"):
        plugin.set_params({"fc.bias": np.zeros(2, np.float32)})


def test_bfloat16_model(tmp_path: Path) -> None:
    # onnxruntime's numpy bridge lacks bfloat16; the plugin goes through OrtValues
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "bf16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["n", 3])])
    path = tmp_path / "bf16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    plugin = load({"model": str(path)})
    assert plugin.describe()[0].inputs[0].dtype == "bfloat16"
    bf16 = to_numpy_dtype("bfloat16")
    x = np.arange(6, dtype=np.float32).reshape(2, 3).astype(bf16)
    y = plugin.call("run", {"x": x}, {})["y"]
    assert y.dtype == bf16 and y.tobytes() == x.tobytes()


@NO_CUDA_EP
def test_cuda_without_its_provider_is_refused(exported: tuple[Path, Classifier]) -> None:
    with pytest.raises(DeviceUnavailable, match="no CUDAExecutionProvider"):
        load({"model": str(exported[0])}, "cuda:0")


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs 'model"):
        load({})
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load({"model": str(tmp_path / "missing.onnx")})


def test_a_missing_onnxruntime_names_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                     exported: tuple[Path, Classifier]) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(PluginUnavailable, match="pip install onnxruntime onnx"):
        create_plugin("onnxruntime", {"model": str(exported[0])}, "cpu")


# --- through real worker processes -----------------------------------------------------------

def test_onnx_then_torch_through_workers(start_cluster, exported: tuple[Path, Classifier]
                                         ) -> None:
    path, model = exported
    cluster = start_cluster(
        {"name": "clf", "plugin": "onnxruntime", "config": {"model": str(path)}},
        {"name": "lin", "plugin": "torch", "config": {
            "factory": "torch.nn:Linear", "seed": 0,
            "kwargs": {"in_features": 2, "out_features": 3},
            "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 2]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 3]}]}})
    g = Graph("onnx-torch").node("a", "clf", "run").node("b", "lin", "forward")
    g.edge("a.logits", "b.x").input("img", "a.img").output("logits", "a.logits")
    g.output("out", "b.y")
    x = images(4)
    with cluster.client(timeout_s=30) as c:
        out = c.run(g, {"img": x})
        # a 3-feature output into the 2-feature input: rejected before anything runs
        bad = Graph("bad").node("a", "lin", "forward").node("b", "lin", "forward")
        bad.edge("a.y", "b.x")
        with pytest.raises(ShapeMismatchError, match=r"a\.y -> b\.x"):
            c.validate(bad)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [want] = session.run(["logits"], {"img": x})
    np.testing.assert_array_equal(out["logits"], want)  # same framework: exact
    np.testing.assert_allclose(out["logits"], torch_out(model, x), rtol=0, atol=1e-5)
    torch.manual_seed(0)
    linear = nn.Linear(2, 3)
    np.testing.assert_array_equal(out["out"], torch_out(linear, out["logits"]))


@NO_CUDA_EP
def test_a_cuda_onnx_worker_fails_to_start(start_cluster, exported: tuple[Path, Classifier]
                                           ) -> None:
    with pytest.raises(InteropError) as err:
        start_cluster({"name": "gpu", "plugin": "onnxruntime", "device": "cuda:0",
                       "config": {"model": str(exported[0])}})
    assert "no CUDAExecutionProvider" in " ".join(err.value.message.split())


def _sequence_model(path: Path, *, sequence_input: bool) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    if sequence_input:  # s in, its first tensor out
        nodes = [helper.make_node("SequenceAt", ["s", "zero"], ["y"])]
        zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
        graph = helper.make_graph(nodes, "g", [seq], [y], initializer=[zero])
    else:  # x in, a sequence and a tensor out (like a classifier's ZipMap and its labels)
        nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["s"]),
                 helper.make_node("Identity", ["x"], ["y"])]
        graph = helper.make_graph(nodes, "g", [x], [seq, y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_sequence_outputs_are_left_out_and_sequence_inputs_refused(tmp_path: Path) -> None:
    plugin = OnnxRuntimePlugin()
    plugin.load({"model": str(_sequence_model(tmp_path / "out.onnx", sequence_input=False))},
                "cpu")
    (spec,) = plugin.describe()
    assert [o.name for o in spec.outputs] == ["y"] and "s (seq(tensor(float)))" in spec.doc
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(plugin.call("run", {"x": x}, {})["y"], x)
    with pytest.raises(UnsupportedError, match="input 's' is a seq"):
        OnnxRuntimePlugin().load(
            {"model": str(_sequence_model(tmp_path / "in.onnx", sequence_input=True))}, "cpu")
