"""The torch worker plugin: every model source, dtypes, devices, parameters, graph checks.

In-process tests drive ``TorchPlugin`` directly; cluster tests run real coordinator
and worker processes and compare against the same framework in this process.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("interop_torch")

# TorchScript is deprecated in torch 2.13 but still a source the plugin supports
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

from safetensors.torch import load_file, save_file
from torch import nn

from interop_runtime import (
    WIRE_DTYPES,
    DeviceUnavailable,
    DTypeMismatchError,
    Graph,
    GraphError,
    InteropError,
    LayoutMismatchError,
    PluginUnavailable,
    ShapeMismatchError,
    UnknownTargetError,
    to_numpy_dtype,
)
from interop_runtime.worker.plugin import create_plugin
from interop_torch import TorchPlugin

HERE = __name__  # factories below are importable as f"{HERE}:name" in this process
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this test needs a GPU-less host")


class Net(nn.Module):
    """A conv net on NCHW images with a second public method."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(img))

    @torch.jit.export
    def features(self, img: torch.Tensor) -> torch.Tensor:
        return self.conv(img).mean((2, 3))

    def scaled(self, img: torch.Tensor) -> torch.Tensor:  # not exported: eager only
        return img * 2

    def _private(self, img: torch.Tensor) -> torch.Tensor:
        return img


class TwoHeads(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(-1)


class DictHeads(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "total": x.sum(-1)}


class InPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.add_(1)


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


def make_two_heads() -> TwoHeads:
    return TwoHeads()


def make_dict_heads() -> DictHeads:
    return DictHeads()


def make_in_place() -> InPlace:
    return InPlace()


def images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def reference(model: Any, *arrays: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(*(torch.from_numpy(a) for a in arrays)).numpy()


def load(config: dict[str, Any], device: str = "cpu") -> TorchPlugin:
    plugin = TorchPlugin()
    plugin.load(config, device)
    return plugin


def save_sources(tmp: Path) -> dict[str, Path]:
    """The seed-0 Net as TorchScript (scripted and traced), torch.export, and seed-1 weights."""
    net, x = make_net(0), torch.from_numpy(images())
    paths = {"script": tmp / "net.script.pt", "trace": tmp / "net.trace.pt",
             "exported": tmp / "net.pt2", "state": tmp / "net1.safetensors"}
    torch.jit.script(net).save(str(paths["script"]))
    torch.jit.trace(net, x).save(str(paths["trace"]))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes={"img": {0: batch}}),
                      str(paths["exported"]))
    save_file(make_net(1).state_dict(), str(paths["state"]))
    return paths


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_sources(tmp_path_factory.mktemp("torch-sources"))


def source_config(kind: str, sources: dict[str, Path]) -> dict[str, Any]:
    if kind == "factory":
        return {"factory": f"{HERE}:make_net", "kwargs": {"seed": 0}}
    if kind in ("script", "trace"):
        return {"torchscript": str(sources[kind])}
    return {"exported": str(sources["exported"])}


# --- in process: sources, signatures, outputs ----------------------------------------------

@pytest.mark.parametrize("with_state", [False, True], ids=["weights", "safetensors"])
@pytest.mark.parametrize("kind", ["factory", "script", "trace", "exported"])
def test_every_source_gives_the_models_output(kind: str, with_state: bool,
                                              sources: dict[str, Path]) -> None:
    config = source_config(kind, sources)
    if with_state:
        config["state"] = str(sources["state"])
    plugin = load(config)
    x = images(3)  # a batch size the export did not see: its batch dim is dynamic
    got = plugin.call("forward", {"img": x}, {})
    want = reference(make_net(1 if with_state else 0), x)
    assert list(got) == ["y"]
    np.testing.assert_array_equal(got["y"], want)


def test_exported_program_signature(sources: dict[str, Path]) -> None:
    [fn] = load({"exported": str(sources["exported"])}).describe()
    assert fn.name == "forward"
    [img] = fn.inputs
    assert (img.name, img.dtype, img.shape, img.layout) == ("img", "float32", [None, 3, 8, 8],
                                                            "NCHW")
    [y] = fn.outputs
    assert (y.name, y.dtype, y.shape) == ("y", "float32", [None, 2])


def test_exported_dict_outputs_keep_their_keys(tmp_path: Path) -> None:
    x = torch.ones(2, 3)
    torch.export.save(torch.export.export(DictHeads(), (x,)), str(tmp_path / "d.pt2"))
    plugin = load({"exported": str(tmp_path / "d.pt2")})
    [fn] = plugin.describe()
    assert [(o.name, o.shape) for o in fn.outputs] == [("double", [2, 3]), ("total", [2])]
    out = plugin.call("forward", {"x": x.numpy()}, {})
    np.testing.assert_array_equal(out["total"], np.full(2, 3, np.float32))


def test_signature_from_config_and_python() -> None:
    declared = load({"factory": f"{HERE}:make_net",
                     "inputs": [{"name": "img", "dtype": "float32", "shape": [None, 3, 8, 8]}],
                     "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 2]}]})
    [fn] = declared.describe()
    assert fn.inputs[0].layout == "NCHW"  # 4-D input, first layer Conv2d(3, ...)
    assert fn.outputs[0].name == "logits"
    assert list(declared.call("forward", {"img": images()}, {})) == ["logits"]
    [bare] = load({"factory": f"{HERE}:make_net"}).describe()
    assert [(s.name, s.dtype, s.shape) for s in bare.inputs] == [("img", None, None)]


def test_tuple_and_dict_results_map_onto_names() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    two = load({"factory": f"{HERE}:make_two_heads",
                "outputs": [{"name": "double"}, {"name": "total"}]})
    out = two.call("forward", {"x": x}, {})
    np.testing.assert_array_equal(out["double"], x * 2)
    np.testing.assert_array_equal(out["total"], x.sum(-1))
    with pytest.raises(ValueError, match="returned 2 outputs but 1 output name"):
        load({"factory": f"{HERE}:make_two_heads"}).call("forward", {"x": x}, {})
    out = load({"factory": f"{HERE}:make_dict_heads"}).call("forward", {"x": x}, {})
    assert sorted(out) == ["double", "total"]


def test_methods_are_offered_when_public_and_present(sources: dict[str, Path]) -> None:
    x = images()
    for config in ({"factory": f"{HERE}:make_net"}, {"torchscript": str(sources["script"])}):
        plugin = load({**config, "methods": {"features": {"outputs": [{"name": "h"}]}}})
        assert [f.name for f in plugin.describe()] == ["forward", "features"]
        with torch.inference_mode():
            want = make_net(0).features(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(plugin.call("features", {"img": x}, {})["h"], want)
    with pytest.raises(ValueError, match="private"):
        load({"factory": f"{HERE}:make_net", "methods": ["_private"]})
    with pytest.raises(ValueError, match="no method 'decode'"):
        load({"factory": f"{HERE}:make_net", "methods": ["decode"]})
    with pytest.raises(ValueError, match="@torch.jit.export"):
        load({"torchscript": str(sources["script"]), "methods": ["scaled"]})
    with pytest.raises(ValueError, match="torch.nn.Module's own"):
        load({"factory": f"{HERE}:make_net", "methods": ["state_dict"]})


def test_config_needs_exactly_one_source(sources: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        load({})
    with pytest.raises(ValueError, match="got factory, torchscript"):
        load({"factory": f"{HERE}:make_net", "torchscript": str(sources["script"])})
    with pytest.raises(FileNotFoundError, match="missing.pt2"):
        load({"exported": "missing.pt2"})


# --- in process: tensors in and out ------------------------------------------------------------

def test_read_only_frames_are_shared_without_a_warning() -> None:
    x = np.arange(6, dtype=np.float32)
    frame = np.frombuffer(x.tobytes(), dtype=np.float32)  # read-only, like a decoded frame
    assert not frame.flags.writeable
    plugin = load({"factory": "torch.nn:Identity"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plugin.call("forward", {"input": frame}, {})["y"]
    assert np.shares_memory(out, frame)  # no copy on the way in or out


def test_a_model_writing_into_its_input_is_stopped_unless_inputs_are_copied() -> None:
    frame = np.frombuffer(np.zeros(3, np.float32).tobytes(), dtype=np.float32)
    with pytest.raises(RuntimeError, match="copy_inputs: true"):
        load({"factory": f"{HERE}:make_in_place"}).call("forward", {"x": frame}, {})
    frame = np.frombuffer(np.zeros(3, np.float32).tobytes(), dtype=np.float32)
    out = load({"factory": f"{HERE}:make_in_place", "copy_inputs": True}).call(
        "forward", {"x": frame}, {})
    np.testing.assert_array_equal(out["y"], np.ones(3, np.float32))
    np.testing.assert_array_equal(frame, np.zeros(3, np.float32))


def test_bfloat16_in_and_out_in_process() -> None:
    bf16 = to_numpy_dtype("bfloat16")
    x = np.array([1.5, -2.0, 3.25], dtype=np.float32).astype(bf16)
    out = load({"factory": "torch.nn:Identity"}).call("forward", {"input": x}, {})["y"]
    assert out.dtype == bf16
    np.testing.assert_array_equal(out.view(np.uint16), x.view(np.uint16))


# --- in process: parameters, devices, a missing torch ----------------------------------------

def test_params_get_and_set_in_process() -> None:
    plugin = load({"factory": f"{HERE}:make_net"})
    params = plugin.get_params(None)
    assert sorted(params) == ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]
    plugin.set_params({"fc.bias": params["fc.bias"] + 1})
    np.testing.assert_array_equal(plugin.get_params(["fc.bias"])["fc.bias"], params["fc.bias"] + 1)
    with pytest.raises(ShapeMismatchError, match="'fc.weight' has shape") as err:
        plugin.set_params({"fc.weight": np.zeros((3, 3), np.float32)})
    assert err.value.field == "fc.weight"
    with pytest.raises(UnknownTargetError, match="nope"):
        plugin.get_params(["nope"])


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_refused_at_load(device: str) -> None:
    with pytest.raises(DeviceUnavailable, match="sees no CUDA device"):
        load({"factory": "torch.nn:Identity"}, device)


def test_a_missing_torch_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(PluginUnavailable, match=r"pip install torch==2\.13\.0"):
        create_plugin("torch", {"factory": "torch.nn:Identity"}, "cpu")


# --- through real worker processes ----------------------------------------------------------

def linear_worker(name: str, in_features: int, out_features: int) -> dict[str, Any]:
    """nn.Linear from torch itself as the factory, seeded: a third party's model, unchanged."""
    return {"name": name, "plugin": "torch", "config": {
        "factory": "torch.nn:Linear", "seed": 0,
        "kwargs": {"in_features": in_features, "out_features": out_features},
        "inputs": [{"name": "x", "dtype": "float32", "shape": [None, in_features]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [None, out_features]}]}}


def seeded_linear(in_features: int, out_features: int) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features)


def test_graph_through_workers_equals_torch_in_process(start_cluster, sources: dict[str, Path]
                                                       ) -> None:
    cluster = start_cluster(
        {"name": "ex", "plugin": "torch", "config": {"exported": str(sources["exported"])}},
        {"name": "ts", "plugin": "torch",
         "config": {"torchscript": str(sources["script"]), "state": str(sources["state"])}},
        linear_worker("lin", 2, 3))
    g = Graph("torch-chain").node("a", "ex", "forward").node("b", "lin", "forward")
    g.edge("a.y", "b.x").input("img", "a.img").output("out", "b.y")
    x = images(4)
    with cluster.client(timeout_s=30) as c:
        out = c.run(g, {"img": x})
        from_ts = c.call("ts", "forward", {"img": x})
    exported = torch.export.load(str(sources["exported"])).module()
    want = reference(seeded_linear(2, 3), reference(exported, x))
    np.testing.assert_array_equal(out["out"], want)
    scripted = torch.jit.load(str(sources["script"]))
    scripted.load_state_dict(load_file(str(sources["state"])))
    np.testing.assert_array_equal(from_ts["y"], reference(scripted.eval(), x))


def random_bits(name: str, rng: np.random.Generator) -> np.ndarray:
    """Arbitrary bit patterns (NaN payloads included) of a wire dtype, shape (2, 3)."""
    if name == "bool":
        return rng.integers(0, 2, (2, 3)).astype(bool)
    dtype = to_numpy_dtype(name)
    return rng.integers(0, 256, 6 * dtype.itemsize, dtype=np.uint8).view(dtype).reshape(2, 3)


def test_every_wire_dtype_round_trips_bit_identical(start_cluster) -> None:
    # torch 2.13 wraps all 15 wire dtypes, uint16/32/64 included, through from_numpy/numpy
    cluster = start_cluster({"name": "ident", "plugin": "torch",
                             "config": {"factory": "torch.nn:Identity"}})
    g = Graph("dtypes")
    for name in WIRE_DTYPES:
        g.node(f"n_{name}", "ident", "forward").input(name, f"n_{name}.input")
        g.output(name, f"n_{name}.y")
    rng = np.random.default_rng(7)
    inputs = {name: random_bits(name, rng) for name in WIRE_DTYPES}
    with cluster.client(timeout_s=30) as c:
        out = c.run(g, inputs)
    for name, sent in inputs.items():
        assert out[name].dtype == sent.dtype, name
        assert out[name].tobytes() == sent.tobytes(), name


def test_params_through_the_runtime_change_the_output(start_cluster) -> None:
    cluster = start_cluster(linear_worker("lin", 4, 3))
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    with cluster.client(timeout_s=30) as c:
        before = c.call("lin", "forward", {"x": x})["y"]
        params = c.get_params("lin")
        assert sorted(params) == ["bias", "weight"]
        version = c.set_params("lin", {"weight": params["weight"] * 2})
        after = c.call("lin", "forward", {"x": x})["y"]
        with pytest.raises(ShapeMismatchError, match="'bias' has shape") as err:
            c.set_params("lin", {"bias": np.zeros(4, np.float32)})
        assert err.value.field == "bias"
    model = seeded_linear(4, 3)
    np.testing.assert_array_equal(before, reference(model, x))
    with torch.no_grad():
        model.weight.mul_(2)
    assert version == 1
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, reference(model, x))


def test_validate_names_the_edge_that_does_not_fit(start_cluster, sources: dict[str, Path]
                                                   ) -> None:
    nhwc = {"name": "nhwc", "plugin": "torch", "config": {
        "factory": "torch.nn:Identity",
        "inputs": [{"name": "input", "dtype": "float32", "shape": [None, 3, 8, 8]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 3, 8, 8],
                     "layout": "NHWC"}]}}
    ints = {"name": "ints", "plugin": "torch", "config": {
        "factory": "torch.nn:Identity", "inputs": [{"name": "input", "dtype": "int64"}]}}
    cluster = start_cluster(linear_worker("lin3", 4, 3), nhwc, ints,
                            {"name": "ex", "plugin": "torch",
                             "config": {"exported": str(sources["exported"])}})
    cases = [("lin3", "lin3", "x", ShapeMismatchError),  # (?, 3) into (?, 4)
             ("lin3", "ints", "input", DTypeMismatchError),  # float32 into int64
             ("nhwc", "ex", "img", LayoutMismatchError)]  # NHWC into NCHW
    with cluster.client(timeout_s=30) as c:
        for src, dst, dst_in, error in cases:
            g = Graph(f"bad-{dst}").node("a", src, "forward").node("b", dst, "forward")
            g.edge("a.y", f"b.{dst_in}")
            with pytest.raises(error) as err:
                c.validate(g)
            assert isinstance(err.value, GraphError)
            assert f"a.y -> b.{dst_in}" in str(err.value)


@NO_CUDA
def test_a_cuda_worker_fails_to_start_with_the_reason(start_cluster, tmp_path: Path) -> None:
    with pytest.raises(InteropError) as err:
        start_cluster({"name": "gpu", "plugin": "torch", "device": "cuda:0",
                       "config": {"factory": "torch.nn:Identity"}})
    assert "sees no CUDA device" in " ".join(err.value.message.split())

    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump({"factory": "torch.nn:Identity"}))
    proc = subprocess.run(
        [sys.executable, "-m", "interop_runtime", "worker", "start", "--plugin", "torch",
         "--device", "cuda:0", "--config", str(config), "--coordinator", "tcp://127.0.0.1:9", "--insecure"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "DeviceUnavailable" in said and "sees no CUDA device" in said
