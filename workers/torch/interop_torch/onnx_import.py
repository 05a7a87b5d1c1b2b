"""ONNX -> torch through onnx2torch, without torchvision (config ``onnx: model.onnx``).

Why the detour: onnx2torch declares torchvision as a dependency, and PyPI's torchvision
pins a CUDA torch, so ``pip install onnx2torch`` replaces the CPU torch. Install it with
``pip install --no-deps onnx2torch`` instead. Its package ``__init__`` imports every
operator converter, and two of them import torchvision at module level
(``node_converters/nms.py``: ``import torchvision``; ``node_converters/roialign.py``:
``from torchvision.ops import roi_align``), so the import fails without torchvision even
for an MLP. When torchvision is absent we import onnx2torch with a stand-in
``torchvision`` in ``sys.modules`` for the duration of that import only; a model that
uses NonMaxSuppression or RoiAlign then fails at call time, naming torchvision.

What exporters write is rewritten before conversion (onnx_rewrites.py): Gelu expanded,
opsets above 17 converted down to 17 with onnx.version_converter (ReduceMean-18's axes
input becomes -13's attribute), no-op ``Reshape(allowzero=1)`` dropped, and a GRU
converter added to onnx2torch's registry.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch

from interop_runtime import FunctionSpec, TensorSpec

from . import onnx_rewrites

MAX_OPSET = onnx_rewrites.TARGET_OPSET  # newer models are converted down to it
INSTALL_HINT = "pip install --no-deps onnx2torch   (never with dependencies: see onnx_import.py)"

# onnx TensorProto element types -> wire dtype names
_ONNX_TO_WIRE = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
                 7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32",
                 13: "uint64", 16: "bfloat16"}


def _needs_torchvision(*_: Any, **__: Any) -> Any:
    raise NotImplementedError("this ONNX operator (NonMaxSuppression or RoiAlign) needs "
                              "torchvision, which is not installed")


def import_onnx2torch() -> Any:
    if importlib.util.find_spec("onnx2torch") is None:
        raise ImportError(f"loading an ONNX model into torch needs onnx2torch: {INSTALL_HINT}",
                          name="onnx2torch")
    if "onnx2torch" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        import onnx2torch

        onnx_rewrites.register_gru(onnx2torch)
        return onnx2torch
    vision = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = _needs_torchvision  # type: ignore[attr-defined]
    vision.ops = ops  # type: ignore[attr-defined]
    stand_ins = {"torchvision": vision, "torchvision.ops": ops}
    sys.modules.update(stand_ins)
    try:
        import onnx2torch
    finally:  # nobody else in this process may mistake the stand-in for torchvision
        for name in stand_ins:
            sys.modules.pop(name, None)
    onnx_rewrites.register_gru(onnx2torch)
    return onnx2torch


def prepare(model: Any) -> Any:
    """The model as onnx2torch can load it (see onnx_rewrites.prepare)."""
    return onnx_rewrites.prepare(model)


def load(path: Path) -> tuple[torch.nn.Module, FunctionSpec]:
    """An nn.Module (torch.fx GraphModule) for the ONNX file, and its forward's spec."""
    import onnx

    onnx2torch = import_onnx2torch()
    model = onnx.load(str(path))  # onnx refuses external data outside the model's folder
    spec = _spec(model)
    return onnx2torch.convert(prepare(model)), spec


def _spec(model: Any) -> FunctionSpec:
    initializers = {i.name for i in model.graph.initializer}
    rows = _gather_rows(model)

    def tensor(value: Any) -> TensorSpec:
        t = value.type.tensor_type
        shape = ([d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
                 if t.HasField("shape") else None)
        return TensorSpec(name=value.name, dtype=_ONNX_TO_WIRE.get(t.elem_type), shape=shape,
                          range=[0, rows[value.name] - 1] if value.name in rows else None)

    return FunctionSpec(name="forward", doc="an ONNX model converted by onnx2torch",
                        inputs=[tensor(v) for v in model.graph.input if v.name not in initializers],
                        outputs=[tensor(v) for v in model.graph.output])


def _gather_rows(model: Any) -> dict[str, int]:
    """Graph input -> rows of the constant table it indexes (an embedding: Gather of an
    initializer along axis 0), so that generated token ids stay in range."""
    tables = {i.name: list(i.dims) for i in model.graph.initializer}
    source = {v.name: v.name for v in model.graph.input}  # value -> the input it is
    rows: dict[str, int] = {}
    for node in model.graph.node:  # topologically sorted
        if node.op_type == "Cast" and node.input[0] in source:  # tf2onnx casts ids first
            source[node.output[0]] = source[node.input[0]]
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] not in source:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        dims = tables.get(node.input[0])
        name = source[node.input[1]]
        if dims and axis == 0 and dims[0] > 0:
            rows[name] = min(rows.get(name, dims[0]), dims[0])
    return rows
