"""Output fusion over TensorFlow, PyTorch and ONNX Runtime workers: one input, three
models, a weighted average and a majority vote, against numpy on the branch outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")  # torch.onnx.export(dynamo=True) needs it
pytest.importorskip("interop_tensorflow")
pytest.importorskip("interop_torch")
pytest.importorskip("interop_onnxruntime")

from interop_runtime import FunctionFailedError, Graph
from interop_runtime.ops import fusion as fusion_ops
from interop_runtime.ops.fusion import fusion_worker

BRANCHES = ("tf", "torch", "onnx")


def export_onnx(path: Path) -> Path:
    from interop_torch.models import classifier

    model = classifier(seed=3, in_features=8, classes=3)
    with warnings.catch_warnings():  # torch's exporter warns about its own pytree internals
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(model, (torch.zeros(2, 8),), str(path), dynamo=True, input_names=["x"],
                          output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return path


def softmax(x: np.ndarray, t: float) -> np.ndarray:
    e = np.exp(x.astype(np.float64) / t - (x.astype(np.float64) / t).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_vote(outs: list[np.ndarray]) -> np.ndarray:
    """Row by row, as the docstring says: most argmax votes, ties to the most summed prob."""
    probs = sum(softmax(o, 1.0) for o in outs)
    labels = []
    for i in range(outs[0].shape[0]):
        counts = np.bincount([int(o[i].argmax()) for o in outs], minlength=3)
        tied = np.flatnonzero(counts == counts.max())
        labels.append(tied[np.argmax(probs[i, tied])])
    return np.array(labels, np.int64)


def test_fusion_of_tf_torch_and_onnx_branches(start_cluster, tmp_path) -> None:
    onnx_path = export_onnx(tmp_path / "clf.onnx")
    cluster = start_cluster(
        {"name": "tf", "plugin": "tensorflow",
         "config": {"factory": "interop_tensorflow.models:tiny_mlp",
                    "kwargs": {"seed": 1, "in_dim": 8, "out": 3}}},
        {"name": "torch", "plugin": "torch",
         "config": {"factory": "interop_torch.models:classifier",
                    "kwargs": {"seed": 2, "in_features": 8, "classes": 3},
                    "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 8]}],
                    "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 3]}]}},
        {"name": "onnx", "plugin": "onnxruntime", "config": {"model": str(onnx_path)}},
        fusion_worker("fuse", BRANCHES, classes=3),
        heartbeat_s=1.0)
    weights = [0.5, 0.3, 0.2]
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    with cluster.client(timeout_s=60) as c:
        tf_fn = c.functions("tf")["forward"]
        ports = {"tf": (f"tf.{tf_fn['inputs'][0]['name']}", f"tf.{tf_fn['outputs'][0]['name']}"),
                 "torch": ("torch.x", "torch.logits"), "onnx": ("onnx.x", "onnx.logits")}
        g = Graph("fusion")
        for b in BRANCHES:
            g.node(b, b, "run" if b == "onnx" else "forward")
        g.node("probs", "fuse", "mean", weights=weights, softmax=True, temperature=2.0)
        g.node("logits", "fuse", "mean", weights=dict(zip(BRANCHES, weights)))
        g.node("vote", "fuse", "vote")
        g.input("x", *(ports[b][0] for b in BRANCHES))
        for b in BRANCHES:
            for fused in ("probs", "logits", "vote"):
                g.edge(ports[b][1], f"{fused}.{b}")
            g.output(b, ports[b][1])
        for fused in ("probs", "logits", "vote"):
            g.output(fused, f"{fused}.y")
        out = c.run(g, {"x": x})

        # a wrong weight count is a clear, typed failure naming the problem
        bad = Graph("fusion-bad").node("t", "torch", "forward")
        bad.node("m", "fuse", "mean", weights=[1.0, 2.0])
        bad.input("x", "t.x").output("y", "m.y")
        for b in BRANCHES:
            bad.edge("t.logits", f"m.{b}")
        with pytest.raises(FunctionFailedError, match="2 weights for 3 inputs"):
            c.run(bad, {"x": x})

    branch = [out[b] for b in BRANCHES]
    assert all(o.shape == (64, 3) and o.dtype == np.float32 for o in branch)
    assert len({o.tobytes() for o in branch}) == 3  # three different models
    w = np.array(weights) / sum(weights)
    want_probs = sum(wi * softmax(o, 2.0) for wi, o in zip(w, branch)).astype(np.float32)
    want_logits = sum(wi * o.astype(np.float64) for wi, o in zip(w, branch)).astype(np.float32)
    np.testing.assert_allclose(out["probs"], want_probs, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["logits"], want_logits, rtol=1e-6, atol=1e-7)
    assert out["vote"].dtype == np.int64
    np.testing.assert_array_equal(out["vote"], numpy_vote(branch))
    picks = np.stack([o.argmax(-1) for o in branch])
    assert (picks != picks[0]).any(), "the models should disagree somewhere for the vote to matter"


def test_vote_breaks_ties_by_summed_probability() -> None:
    a = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    b = np.array([[0.0, 1.0, 0.0], [0.0, 3.0, 0.0]], np.float32)
    c = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]], np.float32)
    names = ["a", "b", "c"]
    # row 0: one vote each, class 0's 4.0 logit gives it the most probability; row 1: 2 votes
    np.testing.assert_array_equal(fusion_ops.vote(names=names, a=a, b=b, c=c), [0, 2])
    # weights outvote: b alone weighs more than a and c together
    np.testing.assert_array_equal(
        fusion_ops.vote(names=names, weights=[1, 3, 1], a=a, b=b, c=c), [1, 1])
    with pytest.raises(ValueError, match="same shape"):
        fusion_ops.mean(names=["a", "b"], a=a, b=b[:1])
    with pytest.raises(ValueError, match="temperature applies only with softmax"):
        fusion_ops.mean(names=names, temperature=2.0, a=a, b=b, c=c)
    with pytest.raises(ValueError, match="distinct identifiers"):
        fusion_worker("f", ["a", "weights"])
