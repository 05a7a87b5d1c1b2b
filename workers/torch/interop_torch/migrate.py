"""``export_onnx``: the worker's model as ONNX bytes, exported where the model lives.

Offered when the worker config says ``export: true``. Arguments (all optional):
``opset`` (default: the exporter's own), ``batch`` (example batch size, default 2).
Outputs: ``onnx`` (uint8, the serialized ModelProto) and ``info`` (uint8, UTF-8
JSON: exporter used, opset, input/output names, why a fallback happened).

The torch.export-based exporter (``dynamo=True``, needs onnxscript) is tried first;
the TorchScript one (``dynamo=False``) only when it fails, and ``info`` says so.
Every ``None`` dim of the declared inputs is exported dynamic; the first one of each
input is the shared ``batch`` dim. ONNX names are the function's declared names, so
the ONNX Runtime worker takes the same inputs and returns the same outputs.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np
import torch

from interop_runtime import FunctionSpec, TensorSpec, exportspec, to_numpy_dtype

FUNCTION, SPEC = exportspec.FUNCTION, exportspec.SPEC
DEFAULT_BATCH = 2
OTHER_DYNAMIC_DIM = 8  # example size of a dynamic dim that is not the batch

log = logging.getLogger("interop.torch.migrate")


def export_onnx(model: torch.nn.Module, forward: FunctionSpec, device: torch.device,
                **args: Any) -> dict[str, np.ndarray]:
    """Export ``model.forward`` (declared by ``forward``) and pack bytes + info as outputs;
    the plugin offers it bound to its model (functools.partial), called with node args."""
    opset, batch = exportspec.parse_args(args)
    batch = batch or DEFAULT_BATCH
    examples, dynamic = _examples(forward.inputs, batch, device)
    in_names = [s.name for s in forward.inputs]
    out_names = [s.name for s in forward.outputs]
    info: dict[str, Any] = {"framework": "torch", "torch": torch.__version__,
                            "inputs": in_names, "outputs": out_names}
    # the worker calls functions under inference_mode; torch.export needs it off
    with torch.inference_mode(False), torch.no_grad():
        try:
            data = _dynamo(model, examples, dynamic, in_names, out_names, opset)
            info["exporter"] = "torch.onnx.export(dynamo=True)"
        except Exception as exc:
            log.warning("dynamo ONNX export failed (%s: %s); trying dynamo=False",
                        type(exc).__name__, exc)
            info["fallback_reason"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            data = _torchscript(model, examples, dynamic, in_names, out_names, opset)
            info["exporter"] = "torch.onnx.export(dynamo=False)"
    info["opset"] = _opset_of(data)
    return exportspec.pack(data, info)


def _examples(specs: list[TensorSpec], batch: int, device: torch.device
              ) -> tuple[tuple[torch.Tensor, ...], list[dict[int, str]]]:
    """Example tensors from the declared specs, and which of their dims are dynamic."""
    examples, dynamic = [], []
    gen = torch.Generator().manual_seed(0)
    for s in specs:
        if s.shape is None or s.dtype is None:
            raise ValueError(f"input {s.name!r} declares no shape or dtype; declare inputs "
                             "(name, dtype, shape) in the worker config to export it")
        dims: dict[int, str] = {}
        shape = []
        for i, d in enumerate(s.shape):
            if d is None:
                dims[i] = "batch" if not dims else f"{s.name}_d{i}"
            shape.append(d if d is not None else batch if dims[i] == "batch" else OTHER_DYNAMIC_DIM)
        dtype = to_numpy_dtype(s.dtype)
        if np.issubdtype(dtype, np.floating):
            t = torch.randn(*shape, generator=gen).to(getattr(torch, s.dtype))
        else:
            t = torch.zeros(*shape, dtype=getattr(torch, s.dtype))
        examples.append(t.to(device))
        dynamic.append(dims)
    return tuple(examples), dynamic


def _dynamo(model: torch.nn.Module, examples: tuple[torch.Tensor, ...],
            dynamic: list[dict[int, str]], in_names: list[str], out_names: list[str],
            opset: int | None) -> bytes:
    dims: dict[str, Any] = {}  # one Dim object per name, so inputs share their batch dim
    shapes = tuple({i: dims.setdefault(n, torch.export.Dim(n)) for i, n in d.items()} or None
                   for d in dynamic)
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.13's own LeafSpec deprecation
        program = torch.onnx.export(model, examples, dynamo=True, input_names=in_names,
                                    output_names=out_names or None, dynamic_shapes=shapes,
                                    verbose=False, **kwargs)
    assert program is not None
    return program.model_proto.SerializeToString()


def _torchscript(model: torch.nn.Module, examples: tuple[torch.Tensor, ...],
                 dynamic: list[dict[int, str]], in_names: list[str], out_names: list[str],
                 opset: int | None) -> bytes:
    axes: dict[str, dict[int, str]] = {n: d for n, d in zip(in_names, dynamic) if d}
    for n in out_names if any(dynamic) else []:  # outputs follow the batch dim
        axes[n] = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # we know it is the legacy path
        torch.onnx.export(model, examples, buffer, dynamo=False, input_names=in_names,
                          output_names=out_names or None, dynamic_axes=axes,
                          opset_version=opset or 17)
    return buffer.getvalue()


def _opset_of(data: bytes) -> int | None:
    import onnx

    model = onnx.load_from_string(data)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
