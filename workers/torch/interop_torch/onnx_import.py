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

Two preparations make torch.onnx (dynamo) exports convertible: onnx2torch 1.5.15 has
converters up to opset 18 (Reshape-19 and later are missing), so newer models are
converted down with onnx.version_converter; and it rejects ``Reshape(allowzero=1)``,
which the dynamo exporter always writes: dropped where the target shape is a constant
without zeros, where allowzero changes nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch

from interop_runtime import FunctionSpec, TensorSpec

MAX_OPSET = 18
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
    return onnx2torch


def prepare(model: Any) -> Any:
    """The model at opset <= MAX_OPSET with no-op ``allowzero`` attributes dropped."""
    from onnx import numpy_helper, version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > MAX_OPSET:
        model = version_converter.convert_version(model, MAX_OPSET)
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    for node in model.graph.node:
        shape = constants.get(node.input[1]) if node.op_type == "Reshape" else None
        if shape is not None and 0 not in shape.tolist():
            kept = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(kept)
    return model


def load(path: Path) -> tuple[torch.nn.Module, FunctionSpec]:
    """An nn.Module (torch.fx GraphModule) for the ONNX file, and its forward's spec."""
    import onnx

    onnx2torch = import_onnx2torch()
    model = onnx.load(str(path))  # onnx refuses external data outside the model's folder
    spec = _spec(model)
    return onnx2torch.convert(prepare(model)), spec


def _spec(model: Any) -> FunctionSpec:
    initializers = {i.name for i in model.graph.initializer}

    def tensor(value: Any) -> TensorSpec:
        t = value.type.tensor_type
        shape = ([d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
                 if t.HasField("shape") else None)
        return TensorSpec(name=value.name, dtype=_ONNX_TO_WIRE.get(t.elem_type), shape=shape)

    return FunctionSpec(name="forward", doc="an ONNX model converted by onnx2torch",
                        inputs=[tensor(v) for v in model.graph.input if v.name not in initializers],
                        outputs=[tensor(v) for v in model.graph.output])
