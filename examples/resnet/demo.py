"""The main job: a Keras ResNet50 (TensorFlow worker) extracts 2048-d features that feed a
PyTorch classifier (PyTorch worker) and, beside it, an ONNX Runtime copy of the same
classifier exported from the torch one. Prints the top-5 classes per image, where the time
went (per node and in transport), and how well the torch and ONNX branches agree.

    ./run demo            (or: .venv/bin/python examples/resnet/demo.py --batch 4)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from interop_runtime import ClusterSpec, Graph, LocalCluster

console = Console()


def export_classifier_onnx(path: Path, seed: int) -> None:
    """The ONNX copy of the torch classifier, made from the very same seeded module."""
    import torch

    from interop_torch.models import classifier

    model = classifier(seed=seed)
    example = torch.zeros(1, 2048)
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (example,), str(path), input_names=["features"],
                      output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True,
                      verbose=False)


def cluster_spec(onnx_path: Path, seed: int, device: str) -> ClusterSpec:
    return ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 1.0},
        "workers": [
            {"name": "keras", "plugin": "tensorflow", "device": device,
             "config": {"factory": "interop_tensorflow.models:resnet50_features",
                        "kwargs": {"seed": seed}}},
            {"name": "torch", "plugin": "torch", "device": device,
             "config": {"factory": "interop_torch.models:classifier", "kwargs": {"seed": seed},
                        "inputs": [{"name": "features", "dtype": "float32",
                                    "shape": [None, 2048]}],
                        "outputs": [{"name": "logits", "dtype": "float32",
                                     "shape": [None, 1000]}]}},
            {"name": "onnx", "plugin": "onnxruntime", "device": device,
             "config": {"model": str(onnx_path)}},
        ]})


def build_graph(client) -> tuple[Graph, str]:
    """Wire the graph from the signatures the workers registered."""
    fns = {w["name"]: {f["name"]: f for f in w["functions"]} for w in client.workers()}
    keras_fn = fns["keras"]["forward"]
    image_in, feat_out = keras_fn["inputs"][0]["name"], keras_fn["outputs"][0]["name"]
    onnx_fn_name = next(iter(fns["onnx"]))
    g = Graph("resnet-cross-framework")
    g.node("features", "keras", "forward")
    g.node("classify_torch", "torch", "forward")
    g.node("classify_onnx", "onnx", onnx_fn_name)
    g.edge(f"features.{feat_out}", "classify_torch.features")
    g.edge(f"features.{feat_out}", "classify_onnx.features")
    g.input("images", f"features.{image_in}")
    g.output("torch_logits", "classify_torch.logits")
    g.output("onnx_logits", "classify_onnx.logits")
    return g, image_in


def top5(logits: np.ndarray) -> np.ndarray:
    return np.argsort(-logits, axis=1)[:, :5]


def report(result, images: np.ndarray, wall_s: float) -> None:
    t_logits, o_logits = result["torch_logits"], result["onnx_logits"]
    table = Table("image", "top-5 classes (torch)", "top-5 classes (onnx)", title="predictions")
    for i, (a, b) in enumerate(zip(top5(t_logits), top5(o_logits))):
        table.add_row(str(i), " ".join(map(str, a)), " ".join(map(str, b)))
    console.print(table)

    timing = Table("node", "worker", "compute ms", "done at ms (from run start)",
                   title="where the time went")
    for node, t in result.timings.items():
        timing.add_row(node, t["worker"], f"{t['compute_us'] / 1e3:.2f}", f"{t['done_us'] / 1e3:.2f}")
    console.print(timing)
    feats = result.timings["features"]
    critical = max(result.timings[n]["compute_us"] for n in ("classify_torch", "classify_onnx"))
    compute = feats["compute_us"] + critical
    transport = result.elapsed_us - compute
    console.print(f"end to end {result.elapsed_us / 1e3:.2f} ms: compute on the critical path "
                  f"{compute / 1e3:.2f} ms, transport and scheduling {transport / 1e3:.2f} ms "
                  f"({feats['bytes_out']} feature bytes went worker to worker); "
                  f"client wall time {wall_s * 1e3:.2f} ms for {len(images)} images")

    diff = np.abs(t_logits - o_logits)
    rel = diff / np.maximum(np.abs(t_logits), 1e-12)
    agree = np.mean([set(a) == set(b) for a, b in zip(top5(t_logits), top5(o_logits))])
    top1 = np.mean(t_logits.argmax(1) == o_logits.argmax(1))
    console.print(f"torch vs ONNX: max |Δ| {diff.max():.3e}, max relative {rel.max():.3e}, "
                  f"top-1 agreement {top1:.0%}, top-5 set agreement {agree:.0%}, "
                  f"allclose(rtol=1e-3, atol=1e-5): {np.allclose(t_logits, o_logits, 1e-3, 1e-5)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for every worker")
    parser.add_argument("--runs", type=int, default=3, help="runs to time (first is warm-up)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="interop-demo-") as tmp:
        onnx_path = Path(tmp) / "classifier.onnx"
        export_classifier_onnx(onnx_path, args.seed)
        console.print("starting a coordinator and 3 workers (TensorFlow, PyTorch, ONNX Runtime)...")
        t0 = time.perf_counter()
        with LocalCluster(cluster_spec(onnx_path, args.seed, args.device)) as cluster, \
                cluster.client(timeout_s=300) as client:
            console.print(f"cluster up in {time.perf_counter() - t0:.1f} s at {cluster.address}")
            graph, _ = build_graph(client)
            console.print(f"graph validated, order: {client.validate(graph)}")
            client.register(graph)
            rng = np.random.default_rng(args.seed)
            # generated images: smooth colour gradients plus noise, a different scene each
            ys, xs = np.mgrid[0:224, 0:224] / 224.0
            images = np.stack([np.stack([np.sin(ys * f + p), np.cos(xs * f - p), ys * xs * f],
                                        axis=-1) * 60 + 100
                               for f, p in rng.uniform([1, 0], [12, 6], size=(args.batch, 2))])
            images = (images + rng.normal(0, 10, images.shape)).astype(np.float32)
            for _ in range(max(1, args.runs)):
                t1 = time.perf_counter()
                result = client.run(graph.name, {"images": images}, timeout_s=300)
                wall = time.perf_counter() - t1
            report(result, images, wall)


if __name__ == "__main__":
    main()
