"""Migrating a model through ONNX, client side: export, serve, compare.

    report = migrate(client, "torch-mlp", "mlp.onnx")       # inputs generated from the spec

1. CONTROL invoke ``export_onnx`` on the source worker (offered by the torch and
   tensorflow plugins when their config says ``export: true``): the export runs
   where the model and its framework live; the bytes come back as a uint8 tensor.
2. The bytes are written to ``out_path``; an onnxruntime worker serves that file,
   either one the caller started (``target_worker=``) or a temporary one started here
   next to the coordinator and stopped afterwards (a worker of the same kind as
   ``LocalCluster``'s, with ``self_contained: true``: the file came over the wire, so
   tensors kept in external files, which could name any path, are refused).
3. The same inputs go through the source's function and the ONNX model's ``run``,
   both through the runtime, and ``parity.compare`` reports the differences.

``roundtrip`` goes on: the file is loaded back into torch on a temporary torch worker
(``onnx:`` config, onnx2torch with interop_torch.onnx_rewrites) and the report has a row
per direction (``torch -> onnx``, ``onnx -> torch``, ``torch -> torch``; ``keras -> ...``
for Keras sources).

The core imports no ML framework: ONNX is handled only as bytes here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interop_runtime.client.client import Client
from interop_runtime.client.cluster import ClusterSpec, CoordinatorSpec, LocalCluster, WorkerSpec
from interop_runtime.ops.migration import exportspec
from interop_runtime.ops.migration.parity import (
    MigrationReport,
    ParityReport,
    Tolerance,
    compare,
)
from interop_runtime.wire.dtypes import to_numpy_dtype
from interop_runtime.wire.errors import BadArgumentError, UnknownFunctionError, UnsupportedError
from interop_runtime.wire.messages import FunctionSpec, TensorSpec

EXPORT_FUNCTION = exportspec.FUNCTION
ONNX_FUNCTION = "run"  # the onnxruntime plugin's one function
ROUNDTRIP_TARGETS = ("torch",)  # plugins that load an ONNX file (config ``onnx:``)
EXPORT_TIMEOUT_S = 300.0  # a first dynamo export compiles a lot; big models take minutes


@dataclass
class Exported:
    data: bytes
    info: dict[str, Any] = field(default_factory=dict)  # exporter, opset, names, fallbacks


def export_onnx(client: Client, worker: str, *, opset: int | None = None, batch: int = 2,
                timeout_s: float = EXPORT_TIMEOUT_S) -> Exported:
    """The worker's model as ONNX bytes, with what the exporter said about it."""
    functions = client.functions(worker)
    if EXPORT_FUNCTION not in functions:
        raise UnknownFunctionError(f"worker {worker!r} does not offer {EXPORT_FUNCTION}; start it with "
                           "`export: true` in its config (torch and tensorflow plugins)",
                           worker=worker)
    args: dict[str, Any] = {"batch": batch}
    if opset is not None:
        args["opset"] = opset
    out = client.call(worker, EXPORT_FUNCTION, {}, timeout_s=timeout_s, **args)
    return Exported(*exportspec.unpack(out))


def example_inputs(spec: FunctionSpec | Mapping[str, Any], batch: int = 2, seed: int = 0
                   ) -> dict[str, np.ndarray]:
    """Seeded inputs of a function's declared dtypes and shapes; dynamic dims -> ``batch``.

    Values fit what the spec says the model accepts: within ``range`` where an input
    declares one (token ids below an embedding's rows); 0/1 for an integer input named
    like a mask (``attention_mask``); else small integers 0..9, standard normal floats."""
    fn = spec if isinstance(spec, FunctionSpec) else FunctionSpec.model_validate(spec)
    rng = np.random.default_rng(seed)
    return {s.name: _example(s, batch, rng) for s in fn.inputs}


def value_range(s: TensorSpec) -> tuple[float, float] | None:
    """The inclusive range to draw ``s``'s values from, if anything says one."""
    if s.range is not None:
        lo, hi = s.range
        if lo > hi:
            raise BadArgumentError(f"input {s.name!r} declares range [{lo}, {hi}]: lo > hi")
        return lo, hi
    if s.dtype is not None and to_numpy_dtype(s.dtype).kind in "iub" and "mask" in s.name.lower():
        return 0, 1  # attention/padding masks: anything else means something else
    return None


def _example(s: TensorSpec, batch: int, rng: np.random.Generator) -> np.ndarray:
    if s.shape is None or s.dtype is None:
        raise BadArgumentError(f"input {s.name!r} declares no shape or dtype; pass inputs explicitly")
    shape = tuple(batch if d is None else d for d in s.shape)
    dtype = to_numpy_dtype(s.dtype)
    bounds = value_range(s)
    if dtype.kind == "f":
        if bounds is not None:
            return rng.uniform(bounds[0], bounds[1], shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)  # a range wider than the dtype is clipped to it
        lo, hi = bounds if bounds is not None else (0, 9)  # small: fits every int type
        lo, hi = max(int(np.ceil(lo)), info.min), min(int(np.floor(hi)), info.max)
        if lo > hi:
            raise BadArgumentError(f"input {s.name!r}: no {s.dtype} value in range {s.range}")
        return rng.integers(lo, hi, shape, endpoint=True).astype(dtype)
    raise BadArgumentError(f"input {s.name!r}: no example generator for dtype {s.dtype}")


def write_onnx(path: str | Path, data: bytes) -> Path:
    """Write atomically: a worker may be reading an older file of the same name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


@contextmanager
def temporary_workers(address: str, workers: Mapping[str, tuple[str, Mapping[str, Any]]], *,
                      device: str = "cpu", python: str | None = None, heartbeat_s: float = 1.0,
                      ready_timeout_s: float = 120.0) -> Iterator[list[str]]:
    """Workers (name -> (plugin, config)) registered with the coordinator at ``address``
    for the duration of the block, started together; yields their names, stops them on
    exit. Plain-text clusters only: on a CURVE cluster the operator starts workers with
    their keys (``target_worker=``)."""
    spec = ClusterSpec(coordinator=CoordinatorSpec(bind=address, heartbeat_s=heartbeat_s,
                                                   curve=False),
                       workers=[WorkerSpec(name=name, plugin=plugin, device=device,
                                           python=python, config=dict(config))
                                for name, (plugin, config) in workers.items()])
    cluster = LocalCluster(spec, ready_timeout_s=ready_timeout_s)
    try:  # the coordinator is already running: start only the workers
        for w in spec.workers:
            cluster.start_worker(w)
        cluster.wait_ready(list(workers))
        yield list(workers)
    finally:
        cluster.stop()


@contextmanager
def onnx_worker(address: str, model: str | Path, name: str, *, device: str = "cpu",
                python: str | None = None, heartbeat_s: float = 1.0,
                ready_timeout_s: float = 120.0) -> Iterator[str]:
    """A temporary onnxruntime worker serving ``model`` (see temporary_workers)."""
    config = {"model": str(Path(model).resolve()), "self_contained": True}
    with temporary_workers(address, {name: ("onnxruntime", config)}, device=device,
                           python=python, heartbeat_s=heartbeat_s,
                           ready_timeout_s=ready_timeout_s):
        yield name


def migrate(client: Client, source_worker: str, out_path: str | Path,
            inputs: Mapping[str, Any] | None = None, *, function: str = "forward",
            target_worker: str | None = None, opset: int | None = None, batch: int = 2,
            tolerance: Tolerance | None = None, seed: int = 0, device: str = "cpu",
            timeout_s: float = EXPORT_TIMEOUT_S) -> ParityReport:
    """Export ``source_worker``'s model to ``out_path`` and report the ONNX copy's parity.

    ``inputs`` default to seeded examples of ``function``'s declared shapes (dynamic
    dims = ``batch``). With ``target_worker`` the caller's onnxruntime worker (already
    serving ``out_path``) is used; else a temporary one is started and stopped here."""
    if target_worker is None and client.security is not None:
        raise UnsupportedError("a temporary onnxruntime worker cannot join a CURVE cluster (its key "
                           "is not on the allow-list): start one with its own key, serving "
                           f"{out_path}, and pass target_worker= (--target)")
    exported, path, inputs, reference = _export_with_reference(
        client, source_worker, function, out_path, inputs, opset, batch, seed, timeout_s)
    if target_worker is not None:
        candidate = client.call(target_worker, ONNX_FUNCTION, inputs, timeout_s=timeout_s)
        target = target_worker
    else:
        with onnx_worker(client.address, path, f"{source_worker}-onnx-{os.getpid()}",
                         device=device) as target:
            candidate = client.call(target, ONNX_FUNCTION, inputs, timeout_s=timeout_s)
    notes = [f"exporter fell back: {exported.info['fallback_reason']}"
             ] if exported.info.get("fallback_reason") else []
    return compare(reference, candidate, source=f"{source_worker}.{function}",
                   target=f"{target}.{ONNX_FUNCTION}", tolerance=tolerance,
                   direction=f"{framework_of(exported)} -> onnx",
                   exporter=exported.info.get("exporter"), opset=exported.info.get("opset"),
                   onnx_path=str(path), onnx_bytes=len(exported.data),
                   inputs={k: list(np.shape(v)) for k, v in inputs.items()}, notes=notes)


def _export_with_reference(client: Client, source_worker: str, function: str,
                           out_path: str | Path, inputs: Mapping[str, Any] | None,
                           opset: int | None, batch: int, seed: int, timeout_s: float
                           ) -> tuple[Exported, Path, Mapping[str, Any], dict[str, np.ndarray]]:
    """The source model exported to ``out_path``, the inputs, and the source's own outputs
    on them: what every parity row compares against."""
    specs = client.functions(source_worker)
    if function not in specs:
        raise UnknownFunctionError(f"worker {source_worker!r} has no function {function!r}",
                                   worker=source_worker, field="function")
    if inputs is None:
        inputs = example_inputs(specs[function], batch, seed)
    exported = export_onnx(client, source_worker, opset=opset, batch=batch, timeout_s=timeout_s)
    path = write_onnx(out_path, exported.data)
    reference = client.call(source_worker, function, inputs, timeout_s=timeout_s)
    return exported, path, inputs, reference


def framework_of(exported: Exported) -> str:
    """What the report calls the source: keras for Keras models, else the plugin's framework."""
    framework = str(exported.info.get("framework") or "source")
    return "keras" if "keras" in str(exported.info.get("exporter", "")).lower() else framework


def roundtrip(client: Client, source_worker: str, out_path: str | Path,
              inputs: Mapping[str, Any] | None = None, *, back_to: str = "torch",
              function: str = "forward", opset: int | None = None, batch: int = 2,
              tolerance: Tolerance | None = None, seed: int = 0, device: str = "cpu",
              timeout_s: float = EXPORT_TIMEOUT_S) -> MigrationReport:
    """Export ``source_worker``'s model to ONNX and load it back into ``back_to`` (a plugin
    whose config takes ``onnx: <file>``: torch), each on a temporary worker; the report has
    a row per direction: source -> onnx, onnx -> ``back_to``, source -> ``back_to``."""
    if client.security is not None:
        raise UnsupportedError("a round trip starts temporary workers, which cannot join a CURVE "
                           "cluster; use migrate() with target_worker= there")
    if back_to not in ROUNDTRIP_TARGETS:
        raise UnsupportedError(f"cannot load ONNX back into {back_to!r} (can: "
                           f"{', '.join(ROUNDTRIP_TARGETS)})")
    exported, path, inputs, reference = _export_with_reference(
        client, source_worker, function, out_path, inputs, opset, batch, seed, timeout_s)
    src, stem = framework_of(exported), f"{source_worker}-{os.getpid()}"
    ort_name, back_name = f"{stem}-onnx", f"{stem}-{back_to}"
    with temporary_workers(client.address, {
            ort_name: ("onnxruntime", {"model": str(path.resolve()), "self_contained": True}),
            back_name: (back_to, {"onnx": str(path.resolve())})}, device=device):
        via_onnx = client.call(ort_name, ONNX_FUNCTION, inputs, timeout_s=timeout_s)
        back = client.call(back_name, "forward", inputs, timeout_s=timeout_s)
    source = f"{source_worker}.{function}"
    rows = [compare(reference, via_onnx, source=source, target=f"{ort_name}.{ONNX_FUNCTION}",
                    tolerance=tolerance, direction=f"{src} -> onnx"),
            compare(via_onnx, back, source=f"{ort_name}.{ONNX_FUNCTION}",
                    target=f"{back_name}.forward", tolerance=tolerance,
                    direction=f"onnx -> {back_to}"),
            compare(reference, back, source=source, target=f"{back_name}.forward",
                    tolerance=tolerance, direction=f"{src} -> {back_to}")]
    notes = [f"exporter fell back: {exported.info['fallback_reason']}"
             ] if exported.info.get("fallback_reason") else []
    return MigrationReport(source=source, onnx_path=str(path), onnx_bytes=len(exported.data),
                           exporter=exported.info.get("exporter"),
                           opset=exported.info.get("opset"), directions=rows,
                           passed=all(r.passed for r in rows), notes=notes,
                           inputs={k: list(np.shape(v)) for k, v in inputs.items()})
