"""The TensorFlow worker plugin: every model source, dtypes, devices, parameters.

In-process tests drive the plugin found through its entry point; cluster tests
run real coordinator and worker processes and compare with Keras in this process.
Models are tiny and written under tmp_path; ResNet50 runs only in the slow test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("interop_tensorflow")

import keras

from interop_runtime import (
    WIRE_DTYPES,
    DeviceUnavailable,
    DTypeMismatchError,
    Graph,
    InteropError,
    ShapeMismatchError,
    UnknownTargetError,
    to_numpy_dtype,
)
from interop_runtime.worker.plugin import available_plugins, create_plugin
from interop_tensorflow import TensorFlowPlugin
from interop_tensorflow.models import resnet50_features, tiny_cnn, tiny_mlp

# Keras' own convert_to_numpy (model.save, get_weights) calls np.array on a tf.Tensor
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

MODELS = "interop_tensorflow.models"
HERE = __name__  # factories below are importable as f"{HERE}:name" in this process
NO_GPU = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                            reason="this test needs a host without GPUs")


def rng_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def keras_out(model: Any, x: Any) -> np.ndarray:
    """The reference: the model called eagerly in this process, inference mode."""
    return np.asarray(model(tf.convert_to_tensor(x), training=False))


def random_bits(wire: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Arbitrary bit patterns (NaN payloads included) of a wire dtype; bool is 0/1."""
    rng = np.random.default_rng(seed)
    if wire == "bool":
        return rng.integers(0, 2, shape).astype(np.bool_)
    dtype = to_numpy_dtype(wire)
    raw = rng.integers(0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def tf_worker(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "plugin": "tensorflow", "config": config}


class Doubler(keras.Model):
    """A subclassed model: no symbolic inputs for the plugin to read."""

    def call(self, x: Any) -> Any:
        return x * 2.0


def doubler() -> keras.Model:
    return Doubler(name="doubler")


def sequential() -> keras.Model:
    return keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2, name="out")])


# --- artifacts ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tf-models")


@pytest.fixture(scope="module")
def cnn_file(artifacts: Path) -> Path:
    path = artifacts / "cnn.keras"
    tiny_cnn(seed=3).save(path)
    return path


@pytest.fixture(scope="module")
def mlp_export(artifacts: Path) -> Path:
    path = artifacts / "mlp_export"
    tiny_mlp(seed=4).export(str(path), verbose=False)
    return path


@pytest.fixture(scope="module")
def identity_model(artifacts: Path) -> Path:
    """A SavedModel whose signature ``identity`` returns each of its inputs, one per
    wire dtype (inputs and outputs named after the dtype), any shape."""
    specs = [tf.TensorSpec(None, tf.as_dtype(w), name=w) for w in WIRE_DTYPES]

    @tf.function(input_signature=specs)
    def identity(*xs: Any) -> dict[str, Any]:
        return {w: tf.identity(x) for w, x in zip(WIRE_DTYPES, xs)}

    module = tf.Module()
    module.identity = identity
    path = artifacts / "identity"
    signatures = {"identity": identity.get_concrete_function()}
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


# --- discovery and sources (in process) -------------------------------------------------

def test_registered_as_entry_point() -> None:
    assert available_plugins()["tensorflow"] == "interop_tensorflow.plugin:TensorFlowPlugin"
    assert "tensorflow-cpu" in TensorFlowPlugin.install_hint


def test_factory_describe_and_forward() -> None:
    plugin = create_plugin("tensorflow", {"factory": f"{MODELS}:tiny_mlp",
                                          "kwargs": {"seed": 1, "hidden": 6}}, "cpu")
    [fn] = plugin.describe()
    assert fn.name == "forward"
    assert [i.model_dump() for i in fn.inputs] == [
        {"name": "x", "dtype": "float32", "shape": [None, 8], "layout": None, "range": None}]
    assert [o.model_dump() for o in fn.outputs] == [
        {"name": "y", "dtype": "float32", "shape": [None, 4], "layout": None, "range": None}]
    model = tiny_mlp(seed=1, hidden=6)
    for batch in (1, 5, 2):  # one trace serves every batch size
        x = rng_input((batch, 8), seed=batch)
        out = plugin.call("forward", {"x": x}, {})
        assert same_bits(out["y"], keras_out(model, x))


def test_factory_models_are_deterministic() -> None:
    a, b, c = tiny_cnn(seed=0), tiny_cnn(seed=0), tiny_cnn(seed=1)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_keras_file_conv_model_reports_nhwc(cnn_file: Path) -> None:
    plugin = create_plugin("tensorflow", {"keras_file": str(cnn_file)}, "cpu")
    [fn] = plugin.describe()
    assert fn.inputs[0].model_dump() == {"name": "image", "dtype": "float32",
                                         "shape": [None, 8, 8, 3], "layout": "NHWC", "range": None}
    assert fn.outputs[0].name == "logits" and fn.outputs[0].layout is None
    x = rng_input((3, 8, 8, 3))
    # BatchNorm uses its moving statistics: training=False all the way through
    assert same_bits(plugin.call("forward", {"image": x}, {})["logits"],
                     keras_out(tiny_cnn(seed=3), x))


def test_saved_model_signature(mlp_export: Path) -> None:
    plugin = create_plugin("tensorflow", {"saved_model": str(mlp_export)}, "cpu")
    functions = {f.name: f for f in plugin.describe()}
    assert set(functions) == {"serving_default", "forward"}
    fn = functions["serving_default"]
    assert [(s.name, s.dtype, s.shape) for s in fn.inputs] == [("x", "float32", [None, 8])]
    assert [(s.name, s.dtype, s.shape) for s in fn.outputs] == [("output_0", "float32", [None, 4])]
    x = rng_input((4, 8))
    expected = keras_out(tiny_mlp(seed=4), x)
    for name in functions:
        assert same_bits(plugin.call(name, {"x": x}, {})["output_0"], expected)
    assert set(plugin.get_params(None)) == {"hidden/kernel", "hidden/bias", "y/kernel", "y/bias"}


def test_saved_model_unknown_signature_names_the_ones_there(mlp_export: Path) -> None:
    with pytest.raises(UnknownTargetError, match="no signature 'predict'.*serving_default"):
        create_plugin("tensorflow", {"saved_model": str(mlp_export), "signature": "predict"}, "cpu")


def test_multi_input_model_and_overrides(artifacts: Path) -> None:
    """Inputs by their Input names whatever the built structure; overrides by position."""
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    model = keras.Model({"a": a, "b": b}, {"sum": keras.layers.Add(name="sum")([a, b]),
                                           "diff": keras.layers.Subtract(name="diff")([a, b])})
    path = artifacts / "two.keras"
    model.save(path)
    plain = create_plugin("tensorflow", {"keras_file": str(path)}, "cpu")
    [fn] = plain.describe()
    assert [s.name for s in fn.inputs] == ["a", "b"]
    assert sorted(s.name for s in fn.outputs) == ["diff", "sum"]
    xa, xb = rng_input((2, 3), 1), rng_input((2, 3), 2)
    out = plain.call("forward", {"a": xa, "b": xb}, {})
    np.testing.assert_array_equal(out["sum"], xa + xb)
    np.testing.assert_array_equal(out["diff"], xa - xb)

    renamed = create_plugin("tensorflow", {
        "keras_file": str(path), "tf_function": False,
        "inputs": [{"name": "left"}, {"name": "right", "shape": [None, None]}],
        "outputs": [{"name": "minus"}, {"name": "plus"}]}, "cpu")
    [fn] = renamed.describe()
    assert [(s.name, s.shape) for s in fn.inputs] == [("left", [None, 3]), ("right", [None, None])]
    out = renamed.call("forward", {"left": xa, "right": xb}, {})
    np.testing.assert_array_equal(out["plus"], xa + xb)
    np.testing.assert_array_equal(out["minus"], xa - xb)


def test_sequential_and_subclassed_models() -> None:
    seq = create_plugin("tensorflow", {"factory": f"{HERE}:sequential"}, "cpu")
    [fn] = seq.describe()
    assert ([s.name for s in fn.inputs], [s.name for s in fn.outputs]) == (["x"], ["out"])
    assert seq.call("forward", {"x": rng_input((2, 3))}, {})["out"].shape == (2, 2)

    with pytest.raises(ValueError, match="no symbolic inputs.*give `inputs` and `outputs`"):
        create_plugin("tensorflow", {"factory": f"{HERE}:doubler"}, "cpu")
    sub = create_plugin("tensorflow", {
        "factory": f"{HERE}:doubler", "inputs": [{"name": "x", "dtype": "float64"}],
        "outputs": [{"name": "y", "dtype": "float64"}]}, "cpu")
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(sub.call("forward", {"x": x}, {})["y"], x * 2)


def unnamed() -> keras.Model:
    """No names given: Keras picks them (input_layer_N, dense_N) from per-process counters."""
    x = keras.Input((3,))
    return keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(4)(x)))


def test_keras_names_are_the_layers_and_stable_across_loads(artifacts: Path) -> None:
    model = unnamed()
    path = artifacts / "unnamed.keras"
    model.save(path)
    in_layer, out_layer = model.layers[0].name, model.layers[-1].name
    assert model.inputs[0].name.startswith("keras_tensor")  # what the wire used to carry
    seen = []
    for _ in range(2):
        unnamed()  # moves Keras' name counters, as other models in a process would
        [fn] = create_plugin("tensorflow", {"keras_file": str(path)}, "cpu").describe()
        seen.append(([s.name for s in fn.inputs], [s.name for s in fn.outputs]))
    assert seen[0] == seen[1] == ([in_layer], [out_layer])

    mapped = create_plugin("tensorflow", {"keras_file": str(path), "inputs": {"x": in_layer},
                                          "outputs": {"logits": out_layer}}, "cpu")
    [fn] = mapped.describe()
    assert ([s.name for s in fn.inputs], [s.name for s in fn.outputs]) == (["x"], ["logits"])
    assert fn.inputs[0].shape == [None, 3]  # a mapping renames, nothing else
    x = rng_input((2, 3))
    np.testing.assert_allclose(mapped.call("forward", {"x": x}, {})["logits"], keras_out(model, x),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=f"maps nope, which the model does not have.*{in_layer}"):
        create_plugin("tensorflow", {"keras_file": str(path), "inputs": {"x": "nope"}}, "cpu")


def test_embedding_input_declares_its_range() -> None:
    ids = keras.Input((5,), dtype="int32", name="input_ids")
    mask = keras.Input((5,), dtype="int32", name="attention_mask")
    h = keras.layers.Embedding(30, 4, name="emb")(ids)
    h = h * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    model = keras.Model([ids, mask], keras.layers.Dense(2, name="logits")(h))
    from interop_tensorflow.sources import keras_model

    spec = keras_model(model, {"tf_function": False}, tf, keras).functions["forward"].spec
    assert [(s.name, s.range) for s in spec.inputs] == [("input_ids", [0, 29]),
                                                        ("attention_mask", None)]


@pytest.mark.parametrize("config, message", [
    ({}, "exactly one of"),
    ({"factory": f"{MODELS}:tiny_mlp", "keras_file": "x.keras"}, "exactly one of"),
    ({"factory": f"{MODELS}:tiny_mlp", "kwarg": {}}, "unknown .* config keys: kwarg"),
    ({"factory": f"{MODELS}:tiny_mlp", "signature": "x"}, "signature does not apply to a factory"),
    ({"factory": f"{MODELS}:tiny_mlp", "inputs": [{}, {}]}, "lists 2 tensors but the model has 1"),
    ({"saved_model": "/nonexistent"}, "no SavedModel directory"),
])
def test_bad_config_is_a_clear_error(config: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        create_plugin("tensorflow", config, "cpu")


# --- dtypes ---------------------------------------------------------------------------------

def test_sixteen_bit_floats_every_bit_pattern(identity_model: Path) -> None:
    plugin = create_plugin("tensorflow", {"saved_model": str(identity_model),
                                          "signature": "identity"}, "cpu")
    inputs = {w: random_bits(w, (3,)) for w in WIRE_DTYPES}
    every = np.arange(1 << 16, dtype=np.uint16)
    inputs["bfloat16"] = every.view(to_numpy_dtype("bfloat16"))
    inputs["float16"] = every.view(np.float16)
    out = plugin.call("identity", inputs, {})
    for w in WIRE_DTYPES:
        assert same_bits(out[w], inputs[w]), w


def test_bfloat16_keras_model_matches_keras(artifacts: Path) -> None:
    x_in = keras.Input((4,), dtype="bfloat16", name="x")
    dense = keras.layers.Dense(3, dtype="bfloat16", name="d",
                               kernel_initializer=keras.initializers.GlorotUniform(seed=0))
    model = keras.Model(x_in, dense(x_in))
    path = artifacts / "bf16.keras"
    model.save(path)
    plugin = create_plugin("tensorflow", {"keras_file": str(path)}, "cpu")
    [fn] = plugin.describe()
    assert (fn.inputs[0].dtype, fn.outputs[0].dtype) == ("bfloat16", "bfloat16")
    x = rng_input((5, 4)).astype(to_numpy_dtype("bfloat16"))
    assert same_bits(plugin.call("forward", {"x": x}, {})["d"], keras_out(model, x))


# --- parameters and devices (in process) ---------------------------------------------------

def test_set_params_checks_name_shape_and_dtype() -> None:
    plugin = create_plugin("tensorflow", {"factory": f"{MODELS}:tiny_mlp"}, "cpu")
    params = plugin.get_params(["y/bias"])
    with pytest.raises(UnknownTargetError, match="y/weights"):
        plugin.set_params({"y/weights": params["y/bias"]})
    with pytest.raises(ShapeMismatchError, match=r"'y/bias' has shape \(4,\), got \(3,\)"):
        plugin.set_params({"y/bias": np.zeros(3, np.float32)})
    with pytest.raises(DTypeMismatchError, match="'y/bias' is float32, got complex64"):
        plugin.set_params({"y/bias": np.zeros(4, np.complex64)})
    plugin.set_params({"y/bias": np.arange(4.0)})  # float64 -> float32 is the same kind
    assert plugin.get_params(["y/bias"])["y/bias"].tolist() == [0.0, 1.0, 2.0, 3.0]


@NO_GPU
def test_cuda_without_gpu_is_device_unavailable() -> None:
    with pytest.raises(DeviceUnavailable, match="cuda:0 is not available"):
        create_plugin("tensorflow", {"factory": f"{MODELS}:tiny_mlp"}, "cuda:0")


def test_missing_tensorflow_names_what_to_install() -> None:
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "from interop_runtime.worker.plugin import create_plugin\n"
            "create_plugin('tensorflow', {'factory': 'm:f'}, 'cpu')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "PluginUnavailable" in proc.stderr and "pip install tensorflow-cpu" in proc.stderr


# --- through real worker processes --------------------------------------------------------

def test_cluster_forward_and_params_match_keras(start_cluster: Any) -> None:
    cluster = start_cluster(tf_worker("mlp", factory=f"{MODELS}:tiny_mlp", kwargs={"seed": 7}))
    model = tiny_mlp(seed=7)
    x = rng_input((6, 8))
    graph = Graph("tf-mlp").node("m", "mlp", "forward").input("x", "m.x").output("y", "m.y")
    with cluster.client() as c:
        [info] = c.workers()
        assert info["plugin"] == "tensorflow" and info["device"] == "cpu"
        assert same_bits(c.run(graph, {"x": x})["y"], keras_out(model, x))
        assert same_bits(c.call("mlp", "forward", {"x": x})["y"], keras_out(model, x))

        params = c.get_params("mlp")
        assert sorted(params) == sorted(v.path for v in model.weights)
        for v in model.weights:
            assert same_bits(params[v.path], np.asarray(v.numpy()))

        bias = np.array([1.0, -2.0, 3.0, 0.5], np.float32)
        new = {"y/kernel": np.zeros_like(params["y/kernel"]), "y/bias": bias}
        c.set_params("mlp", new)
        np.testing.assert_array_equal(c.run(graph, {"x": x})["y"], np.tile(bias, (6, 1)))
        with pytest.raises(ShapeMismatchError, match="y/bias"):
            c.set_params("mlp", {"y/bias": np.zeros(5, np.float32)})
        assert same_bits(c.get_params("mlp", ["y/bias"])["y/bias"], bias)


def test_cluster_every_wire_dtype_round_trips(start_cluster: Any, identity_model: Path) -> None:
    cluster = start_cluster(tf_worker("ident", saved_model=str(identity_model),
                                      signature="identity"))
    inputs = {w: random_bits(w, (2, 3, 5), seed=i) for i, w in enumerate(WIRE_DTYPES)}
    with cluster.client() as c:
        spec = c.functions("ident")["identity"]
        assert sorted(i["dtype"] for i in spec["inputs"]) == sorted(WIRE_DTYPES)
        out = c.call("ident", "identity", inputs)
    for w in WIRE_DTYPES:
        assert same_bits(out[w], inputs[w]), w


@NO_GPU
def test_cluster_cuda_without_gpu_fails_to_start(start_cluster: Any) -> None:
    with pytest.raises(InteropError) as info:
        start_cluster({**tf_worker("gpu", factory=f"{MODELS}:tiny_mlp"), "device": "cuda:0"})
    message = " ".join(str(info.value).split())  # the worker's console wraps long lines
    assert "worker gpu" in message and "DeviceUnavailable" in message
    assert "cuda:0 is not available: TensorFlow sees 0 GPU(s)" in message
    assert "no CUDA support (tensorflow-cpu)" in message


# --- the big one -------------------------------------------------------------------------------

@pytest.mark.slow
def test_resnet50_features_shape_and_seed() -> None:
    plugin = create_plugin("tensorflow", {"factory": f"{MODELS}:resnet50_features"}, "cpu")
    [fn] = plugin.describe()
    assert fn.inputs[0].model_dump() == {"name": "image", "dtype": "float32",
                                         "shape": [None, 224, 224, 3], "layout": "NHWC", "range": None}
    assert fn.outputs[0].shape == [None, 2048]
    x = rng_input((2, 224, 224, 3))
    [features] = plugin.call("forward", {"image": x}, {}).values()
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    # the same seed builds the same weights: a second build in this process agrees
    assert same_bits(features, keras_out(resnet50_features(seed=0), x))
