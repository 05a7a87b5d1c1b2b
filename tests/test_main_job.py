"""The main job end to end: Keras ResNet50 (TensorFlow worker) -> PyTorch classifier and
its ONNX Runtime copy, against the same models run in this process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
pytest.importorskip("interop_tensorflow")
pytest.importorskip("interop_torch")
pytest.importorskip("interop_onnxruntime")

from interop_runtime import LocalCluster

DEMO = Path(__file__).resolve().parents[1] / "examples" / "resnet" / "demo.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("interop_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    sys.modules["interop_demo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_resnet_features_to_torch_and_onnx(tmp_path) -> None:
    from interop_tensorflow.models import resnet50_features
    from interop_torch.models import classifier

    demo = load_demo()
    onnx_path = tmp_path / "classifier.onnx"
    demo.export_classifier_onnx(onnx_path, seed=0)
    images = np.random.default_rng(5).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    with LocalCluster(demo.cluster_spec(onnx_path, 0, "cpu")) as cluster, \
            cluster.client(timeout_s=300) as client:
        graph, image_input = demo.build_graph(client)
        graph.output("features", f"features.{client.functions('keras')['forward']['outputs'][0]['name']}")
        result = client.run(graph, {"images": images}, timeout_s=300)
    assert result["torch_logits"].shape == (2, 1000) and result["features"].shape == (2, 2048)
    # same framework: bit for bit
    features = resnet50_features(seed=0)(images, training=False).numpy()
    np.testing.assert_array_equal(result["features"], features)
    with torch.inference_mode():
        logits = classifier(seed=0)(torch.from_numpy(features)).numpy()
    np.testing.assert_array_equal(result["torch_logits"], logits)
    # across frameworks (torch vs ONNX Runtime), within 1e-5 relative to the logits' scale
    scale = max(1.0, float(np.abs(logits).max()))
    np.testing.assert_allclose(result["onnx_logits"], logits, rtol=0, atol=1e-5 * scale)
    assert set(result.timings) == {"features", "classify_torch", "classify_onnx"}
    assert result.timings["features"]["bytes_out"] == 2 * features.nbytes  # to both branches
