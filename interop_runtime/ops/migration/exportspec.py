"""The ``export_onnx`` function contract, shared by the plugins that offer it and the client
that calls it (interop_runtime.migration): one name, one signature, one packing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from interop_runtime.wire.errors import BadArgumentError
from interop_runtime.wire.messages import FunctionSpec, TensorSpec

FUNCTION = "export_onnx"
SPEC = FunctionSpec(
    name=FUNCTION,
    doc="The model's forward as ONNX bytes (args: opset, batch); info is UTF-8 JSON",
    outputs=[TensorSpec(name="onnx", dtype="uint8", shape=[None]),
             TensorSpec(name="info", dtype="uint8", shape=[None])])


def parse_args(args: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(opset, batch) from a node's args; anything else is a mistake worth saying."""
    unknown = sorted(set(args) - {"opset", "batch"})
    if unknown:
        raise BadArgumentError(f"{FUNCTION} takes opset and batch, not {', '.join(unknown)}")
    opset = None if args.get("opset") is None else int(args["opset"])
    batch = None if not args.get("batch") else int(args["batch"])
    return opset, batch


def pack(model: bytes, info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {"onnx": np.frombuffer(model, dtype=np.uint8),
            "info": np.frombuffer(json.dumps(dict(info)).encode(), dtype=np.uint8)}


def unpack(outputs: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, Any]]:
    return outputs["onnx"].tobytes(), json.loads(outputs["info"].tobytes() or b"{}")
