"""Round trips through ONNX on real workers: torch -> ONNX -> torch and Keras -> ONNX ->
torch for a CNN with global pooling, a small transformer encoder and a GRU model, each
loaded back in a torch worker (onnx2torch + interop_torch.onnx_rewrites), with a parity
row per direction (interop_runtime.ops.migration.roundtrip).

The model factories below are imported by the workers (``factory: test_migration_roundtrip:
...`` with this folder on their PYTHONPATH), so they import their framework lazily.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

NEEDED = ("torch", "tensorflow", "tf2onnx", "onnxscript", "onnxruntime", "onnx2torch",
          "interop_torch", "interop_tensorflow", "interop_onnxruntime")
MISSING = [m for m in NEEDED if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}"),
    # raised inside torch.onnx.export on torch 2.13; not ours to fix
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`:FutureWarning")]

HERE = Path(__file__).resolve().parent
MODULE = Path(__file__).stem  # what the workers import the factories as
VOCAB, SEQ, STEPS = 50, 6, 5


# --- models (built in the workers) ----------------------------------------------------------

def torch_cnn() -> Any:
    """Conv, ReLU, global average pooling (ReduceMean-18 in a dynamo export), Linear."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5)).eval()


def torch_encoder() -> Any:
    """Embedding, two nn.TransformerEncoder layers with GELU (Gelu-20), mean pool, Linear."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(VOCAB, 16)
            layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True,
                                               activation="gelu")
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(16, 3)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.enc(self.emb(tokens)).mean(dim=1))

    torch.manual_seed(0)
    return Encoder().eval()


def torch_gru() -> Any:
    """nn.GRU (an ONNX GRU op, which onnx2torch has no converter for), last step, Linear."""
    import torch
    from torch import nn

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(4, 8, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, seq: torch.Tensor) -> torch.Tensor:
            return self.head(self.gru(seq)[0][:, -1])

    torch.manual_seed(0)
    return Recurrent().eval()


def keras_cnn() -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(x, layers.Dense(5, name="logits")(h))


def keras_encoder() -> Any:
    """Embedding, MultiHeadAttention, exact GELU feed-forward (tf2onnx writes Erfc), pool."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
    h = layers.Embedding(VOCAB, 16, name="emb")(tokens)
    h = layers.LayerNormalization(name="ln1")(h + layers.MultiHeadAttention(2, 8, name="mha")(h, h))
    f = layers.Dense(16, name="ff2")(layers.Dense(32, activation="gelu", name="ff1")(h))
    h = layers.GlobalAveragePooling1D(name="pool")(layers.LayerNormalization(name="ln2")(h + f))
    return keras.Model(tokens, layers.Dense(3, name="logits")(h))


def keras_gru() -> Any:
    """A GRU as Keras builds it (unroll=False: tf2onnx would write a Loop)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    x = keras.Input((STEPS, 4), name="seq")
    return keras.Model(x, layers.Dense(3, name="logits")(layers.GRU(8, name="gru")(x)))


# --- the cluster ------------------------------------------------------------------------------

def _torch(name: str, factory: str, x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "plugin": "torch", "env": {"PYTHONPATH": str(HERE)}, "config": {
        "factory": f"{MODULE}:{factory}", "export": True, "inputs": [x], "outputs": [y]}}


def _keras(name: str, factory: str) -> dict[str, Any]:
    return {"name": name, "plugin": "tensorflow", "env": {"PYTHONPATH": str(HERE)},
            "config": {"factory": f"{MODULE}:{factory}", "export": True}}


WORKERS = [
    _torch("t_cnn", "torch_cnn", {"name": "image", "dtype": "float32", "shape": [None, 3, 8, 8]},
           {"name": "logits", "dtype": "float32", "shape": [None, 5]}),
    _torch("t_enc", "torch_encoder", {"name": "tokens", "dtype": "int64", "shape": [None, SEQ],
                                      "range": [0, VOCAB - 1]},
           {"name": "logits", "dtype": "float32", "shape": [None, 3]}),
    _torch("t_gru", "torch_gru", {"name": "seq", "dtype": "float32", "shape": [None, STEPS, 4]},
           {"name": "logits", "dtype": "float32", "shape": [None, 3]}),
    _keras("k_cnn", "keras_cnn"), _keras("k_enc", "keras_encoder"), _keras("k_gru", "keras_gru"),
]


@pytest.fixture(scope="module")
def cluster() -> Any:
    from interop_runtime import ClusterSpec, LocalCluster

    # plain text: roundtrip() starts its temporary workers without keys. A slow heartbeat:
    # an export keeps a worker's interpreter busy for seconds on a loaded machine
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 5.0, "curve": False},
                                       "workers": WORKERS})
    with LocalCluster(spec) as c:
        yield c


# --- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("worker,src", [
    ("t_cnn", "torch"), ("t_enc", "torch"), ("t_gru", "torch"),
    ("k_cnn", "keras"), ("k_enc", "keras"), ("k_gru", "keras")])
def test_roundtrip_to_torch_matches(cluster: Any, tmp_path: Path, worker: str, src: str) -> None:
    from interop_runtime.ops.migration.migrate import example_inputs, roundtrip

    with cluster.client(timeout_s=300) as c:
        inputs = example_inputs(c.functions(worker)["forward"], batch=3, seed=1)
        report = roundtrip(c, worker, tmp_path / f"{worker}.onnx", inputs, back_to="torch")
        reference = c.call(worker, "forward", inputs)
    assert [d.direction for d in report.directions] == [
        f"{src} -> onnx", "onnx -> torch", f"{src} -> torch"]
    assert report.passed, report.to_json()
    end_to_end = report.direction(f"{src} -> torch")
    [out] = end_to_end.outputs
    assert out.name in reference and out.shape == list(reference[out.name].shape)
    assert out.mismatched == 0 and out.total == reference[out.name].size
    # a migrated copy is close, not bit-identical: the report carries real numbers
    assert out.max_abs_err is not None and out.max_abs_err <= 1e-4
    print(f"{worker}: " + ", ".join(f"{d.direction} max abs {d.outputs[0].max_abs_err:.3g}"
                                    for d in report.directions))


def test_generated_token_ids_stay_in_the_vocabulary(cluster: Any) -> None:
    """The Keras plugin fills TensorSpec.range from the Embedding the Input feeds."""
    from interop_runtime.ops.migration.migrate import example_inputs

    with cluster.client() as c:
        [tokens] = c.functions("k_enc")["forward"]["inputs"]
        assert tokens["name"] == "tokens" and tokens["range"] == [0, VOCAB - 1]
        ids = example_inputs(c.functions("k_enc")["forward"], batch=64)["tokens"]
    assert ids.min() >= 0 and ids.max() == VOCAB - 1  # 384 draws reach the top id


def test_cli_round_trip_table_and_json(cluster: Any, tmp_path: Path) -> None:
    out = tmp_path / "t_gru.onnx"
    cmd = [sys.executable, "-m", "interop_runtime", "migrate", "t_gru", "--out", str(out),
           "--back-to", "torch", "-c", cluster.address, "--json"]
    env = {**os.environ, **cluster.connection()}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and out.is_file()
    assert [d["direction"] for d in report["directions"]] == [
        "torch -> onnx", "onnx -> torch", "torch -> torch"]
    bad = subprocess.run([*cmd[:-1], "--target", "nobody"], capture_output=True, text=True,
                         timeout=120, env=env, check=False)
    assert bad.returncode == 2 and "--back-to" in bad.stdout and "Traceback" not in bad.stderr


# --- the rewrites on their own (no workers) -------------------------------------------------------

def test_rewrites_make_dynamo_exports_loadable(tmp_path: Path) -> None:
    """What failed in issue 13: ReduceMean-18, Gelu-20 and GRU from torch's dynamo export."""
    import onnx
    import torch

    from interop_torch import onnx_rewrites
    from interop_torch.onnx_import import import_onnx2torch

    onnx2torch = import_onnx2torch()
    cases = [(torch_cnn(), torch.randn(2, 3, 8, 8), "ReduceMean"),
             (torch_encoder(), torch.randint(0, VOCAB, (2, SEQ)), "Gelu"),
             (torch_gru(), torch.randn(2, STEPS, 4), "GRU")]
    for model, x, op in cases:
        with torch.no_grad():
            proto = torch.onnx.export(model, (x,), dynamo=True, verbose=False).model_proto
        assert op in {n.op_type for n in proto.graph.node}
        assert onnx_rewrites.opset_of(proto) > onnx_rewrites.TARGET_OPSET
        prepared = onnx_rewrites.prepare(onnx.load_from_string(proto.SerializeToString()))
        ops = {n.op_type for n in prepared.graph.node}
        assert onnx_rewrites.opset_of(prepared) == onnx_rewrites.TARGET_OPSET and "Gelu" not in ops
        for node in prepared.graph.node:
            if node.op_type == "ReduceMean":  # -13 form: axes is an attribute now
                assert len(node.input) == 1 and any(a.name == "axes" for a in node.attribute)
        with torch.no_grad():
            expected, got = model(x), onnx2torch.convert(prepared)(x)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_gru_converter_covers_the_spec_variants() -> None:
    """OnnxGRU against onnxruntime's GRU: both directions, both reset orders, and layout 1
    (batch first, which onnxruntime does not run: checked against its layout-0 result)."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from interop_torch.onnx_rewrites import OnnxGRU

    rng = np.random.default_rng(0)
    hidden, feat, seq, batch = 3, 2, 4, 2
    for direction, lbr, layout in [("forward", 0, 0), ("reverse", 1, 0),
                                   ("bidirectional", 1, 1), ("bidirectional", 0, 0)]:
        dirs = 2 if direction == "bidirectional" else 1
        w = rng.standard_normal((dirs, 3 * hidden, feat)).astype(np.float32)
        r = rng.standard_normal((dirs, 3 * hidden, hidden)).astype(np.float32)
        b = rng.standard_normal((dirs, 6 * hidden)).astype(np.float32)
        x = rng.standard_normal((seq, batch, feat)).astype(np.float32)
        node = helper.make_node("GRU", ["x", "w", "r", "b"], ["y", "y_h"], hidden_size=hidden,
                                direction=direction, linear_before_reset=lbr)
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape)
                          for n, a in (("x", x), ("w", w), ("r", r), ("b", b))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        y, y_h = session.run(None, {"x": x, "w": w, "r": r, "b": b})
        module = OnnxGRU(hidden, direction, bool(lbr), layout, outputs=2)
        x_in = x.transpose(1, 0, 2).copy() if layout else x
        got_y, got_h = (t.numpy() for t in module(*map(torch.from_numpy, (x_in, w, r, b))))
        if layout:  # [batch, seq, dirs, hidden] and [batch, dirs, hidden] back to layout 0
            got_y, got_h = got_y.transpose(1, 2, 0, 3), got_h.transpose(1, 0, 2)
        np.testing.assert_allclose(got_y, y, rtol=1e-5, atol=1e-6, err_msg=direction)
        np.testing.assert_allclose(got_h, y_h, rtol=1e-5, atol=1e-6, err_msg=direction)


def test_generated_inputs_respect_ranges_and_masks() -> None:
    from interop_runtime.ops.migration.migrate import example_inputs

    spec = {"name": "f", "inputs": [
        {"name": "input_ids", "dtype": "int64", "shape": [None, 32], "range": [0, 3]},
        {"name": "attention_mask", "dtype": "int64", "shape": [None, 32]},
        {"name": "counts", "dtype": "int32", "shape": [None, 32]},
        {"name": "level", "dtype": "uint8", "shape": [64], "range": [-5, 1000]},
        {"name": "p", "dtype": "float32", "shape": [64], "range": [0.25, 0.5]}]}
    got = example_inputs(spec, batch=4, seed=3)
    assert set(np.unique(got["input_ids"])) == {0, 1, 2, 3}
    assert set(np.unique(got["attention_mask"])) == {0, 1}
    assert got["counts"].min() >= 0 and got["counts"].max() <= 9 and got["counts"].max() > 1
    assert got["level"].dtype == np.uint8  # the range is clipped to what uint8 holds
    assert 0.25 <= got["p"].min() and got["p"].max() <= 0.5
    with pytest.raises(ValueError, match="lo > hi"):
        example_inputs({"name": "f", "inputs": [
            {"name": "t", "dtype": "int64", "shape": [2], "range": [5, 1]}]})
