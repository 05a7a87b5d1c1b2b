"""Serving: dynamic batching against none, at 1, 8 and 64 concurrent clients, for a torch MLP
(torch worker) and the Keras ResNet50 feature extractor (TensorFlow worker, as in
examples/resnet); and a Ray Serve ``@serve.batch`` deployment of the same MLP, when
``ray[serve]`` is installed. Throughput (runs/s over all clients) and p50/p99 latency.

Each client is a thread of this process that sends one request (1 row) after another
(closed loop) through one shared Client; Ray Serve's clients share one DeploymentHandle.
The machine, its CPUs included, is shared with this process: figures are indicative.

Adding a scenario (e.g. 1, 2 and 4 replicas of a CPU-bound torch model under 32 clients,
once replica pools exist): build its worker specs and graph, then call
``run_scenario(res, "replicas_2", workers, graph, model, [32], seconds)``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interop_runtime import ClusterSpec, Graph, LocalCluster

from .common import ResultFile, sigterm_raises


@dataclass
class Model:
    """One model to serve: how a worker loads it, and one client's request."""

    name: str
    plugin: str
    config: dict[str, Any]
    function: str
    input: str
    output: str
    request: Callable[[int], np.ndarray]  # client index -> its input
    batching: dict[str, Any] = field(default_factory=dict)  # {max_batch, max_delay_ms}


def mlp(width: int, hidden: int) -> Model:
    kwargs = {"seed": 0, "in_features": width, "hidden": hidden, "classes": 10}
    return Model(
        "mlp", "torch",
        {"factory": "interop_torch.models:mlp", "kwargs": kwargs, "threads": 1,
         "inputs": [{"name": "x", "dtype": "float32", "shape": [None, width]}],
         "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 10]}]},
        "forward", "x", "logits",
        lambda k: np.random.default_rng(k).standard_normal((1, width)).astype(np.float32),
        {"max_batch": 64, "max_delay_ms": 2})


def resnet(image_size: int) -> Model:
    return Model(
        "resnet50", "tensorflow",
        {"factory": "interop_tensorflow.models:resnet50_features",
         "kwargs": {"seed": 0, "image_size": image_size}},
        "forward", "image", "avg_pool",  # the names Keras gives them
        lambda k: np.random.default_rng(k).random((1, image_size, image_size, 3),
                                                  dtype=np.float32),
        {"max_batch": 64, "max_delay_ms": 5})


def worker_spec(name: str, model: Model, batched: bool) -> dict[str, Any]:
    config = {**model.config, **({"batching": {model.function: model.batching}}
                                 if batched else {})}
    return {"name": name, "plugin": model.plugin, "config": config}


def one_node(worker: str, model: Model) -> Graph:
    g = Graph(f"serve-{worker}").node("n", worker, model.function)
    return g.input("x", f"n.{model.input}").output("y", f"n.{model.output}")


# --- measuring ----------------------------------------------------------------------------

def closed_loop(call: Callable[[np.ndarray], Any], request: Callable[[int], np.ndarray],
                clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads calling one request after another for ``seconds``."""
    stop = time.perf_counter() + seconds
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def client(k: int) -> None:
        x = request(k)
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                call(x)
            except Exception as exc:  # recorded; this client stops
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            lat[k].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    wall = time.perf_counter() - t0
    ms = np.concatenate([np.asarray(x) for x in lat]) * 1e3 if any(lat) else np.zeros(0)
    out: dict[str, Any] = {"clients": clients, "n": int(ms.size), "wall_s": wall,
                           "runs_per_s": ms.size / wall, "errors": len(errors)}
    if ms.size:
        out.update(p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)))
    if errors:
        out["first_error"] = errors[0][:300]
    return out


def sweep(res: ResultFile, key: str, call: Callable[[np.ndarray], Any], model: Model,
          clients: Sequence[int], seconds: float, warmup_s: float) -> None:
    for n in clients:
        closed_loop(call, model.request, n, warmup_s)  # untimed: traces, batch sizes, caches
        res.guarded(f"{key}.clients_{n}",
                    lambda n=n: closed_loop(call, model.request, n, seconds))  # type: ignore[misc]


def run_scenario(res: ResultFile, key: str, workers: list[dict[str, Any]], graph: Graph,
                 model: Model, clients: Sequence[int], seconds: float,
                 warmup_s: float = 0.5) -> None:
    """Start ``workers``, register ``graph`` and measure it at each number of clients."""
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 1.0}, "workers": workers})
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(spec, log_dir=os.path.join(tmp, "logs")) as lc, \
            lc.client(timeout_s=120) as c:
        c.register(graph)
        sweep(res, key, lambda x: c.run(graph.name, {"x": x}), model, clients, seconds,
              warmup_s)


def ours(res: ResultFile, model: Model, clients: Sequence[int], seconds: float,
         warmup_s: float) -> None:
    """The model on one worker with batching, then on one without."""
    for mode, batched in (("batching", True), ("none", False)):
        key, w = f"{model.name}.{mode}", f"{model.name}-{mode}"
        res.guarded(key, lambda k=key, w=w, b=batched: run_scenario(  # type: ignore[misc]
            res, k, [worker_spec(w, model, b)], one_node(w, model), model, clients, seconds,
            warmup_s))


def ray_serve(res: ResultFile, model: Model, clients: Sequence[int], seconds: float,
              warmup_s: float) -> None:
    """The same MLP as a Ray Serve deployment whose __call__ is @serve.batch."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        res.note(f"Ray Serve not measured: {exc} (pip install 'ray[serve]')")
        return
    from .ray_bench import bounded

    temp_dir = tempfile.mkdtemp(prefix="ibray-", dir="/tmp")
    res.put("temp_dir", temp_dir)  # removed by the parent (bench/__main__.py)
    res.put("ray_version", ray.__version__)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _temp_dir=temp_dir)
    kwargs, policy = model.config["kwargs"], model.batching

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
    class MLP:
        def __init__(self) -> None:
            import torch

            from interop_torch.models import mlp as build

            torch.set_num_threads(1)
            self.torch, self.model = torch, build(**kwargs)

        @serve.batch(max_batch_size=policy["max_batch"],
                     batch_wait_timeout_s=policy["max_delay_ms"] / 1000)
        async def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
            with self.torch.inference_mode():
                y = self.model(self.torch.from_numpy(np.concatenate(xs))).numpy()
            return list(np.split(y, np.cumsum([len(x) for x in xs])[:-1]))

    try:
        serve.start(proxy_location="Disabled")
        handle = serve.run(MLP.bind(), name="mlp", route_prefix=None)
        sweep(res, "ray_serve.mlp", lambda x: handle.remote(x).result(timeout_s=120), model,
              clients, seconds, warmup_s)
    finally:
        bounded(serve.shutdown, 60, res, "serve_shutdown")
        bounded(ray.shutdown, 30, res, "ray_shutdown")


def report_lines(results: dict[str, Any]) -> list[str]:
    """The section's Markdown table for bench/report.py."""
    rows = [(k.rsplit(".clients_", 1)[0], v) for k, v in results.items()
            if ".clients_" in k and isinstance(v, dict) and "runs_per_s" in v]
    if not rows:
        return []
    cfg = results.get("config", {})
    out = [f"\n### Serving: dynamic batching, {cfg.get('seconds', '?')} s per point "
           f"(MLP {cfg.get('mlp', {})}, batching {cfg.get('mlp_batching', {})}; ResNet50 "
           f"{results.get('resnet50_image_size', '-')} px)\n",
           "| model.mode | clients | runs/s | p50 ms | p99 ms | errors |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, v in rows:
        out.append(f"| {name} | {v['clients']} | {v['runs_per_s']:.1f} | "
                   f"{v.get('p50_ms', float('nan')):.2f} | {v.get('p99_ms', float('nan')):.2f} | "
                   f"{v['errors']} |")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="1 s per point, smaller models")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--models", default="mlp,resnet50,ray_serve",
                    help="which of mlp, resnet50, ray_serve (the MLP on Ray Serve)")
    ap.add_argument("--seconds", type=float, help="per point (default 3; --quick 1)")
    ap.add_argument("--image-size", type=int, help="ResNet50 input (default 64; --quick 32)")
    args = ap.parse_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    warmup = 0.3 if args.quick else 1.0
    clients = [int(c) for c in args.clients.split(",")]
    chosen = set(args.models.split(","))
    the_mlp = mlp(256, 1024) if args.quick else mlp(512, 2048)
    res.put("config", {"seconds": seconds, "clients": clients, "mlp": the_mlp.config["kwargs"],
                       "mlp_batching": the_mlp.batching, "cpus": os.cpu_count()})
    if "mlp" in chosen:
        ours(res, the_mlp, clients, seconds, warmup)
    if "resnet50" in chosen:
        model = resnet(args.image_size or (32 if args.quick else 64))
        res.put("resnet50_image_size", model.config["kwargs"]["image_size"])
        ours(res, model, clients, seconds, warmup)
    if "ray_serve" in chosen:
        res.guarded("ray_serve", lambda: ray_serve(res, the_mlp, clients, seconds, warmup))


if __name__ == "__main__":
    main()
