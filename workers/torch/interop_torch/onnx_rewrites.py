"""Small ONNX graph rewrites that let onnx2torch 1.5.15 load what exporters write.

onnx2torch has converters up to opset 17 for the ops in the way (ReduceMean stops at
-13: from -18 on, reductions take ``axes`` as an input), no Gelu (an opset-20 op with
no earlier version, so onnx.version_converter cannot go below 20 while one is there)
and no GRU at all. ``prepare`` runs, in order:

1. ``expand_gelu``: Gelu -> its Erf (or tanh) formula, the ops it is defined by.
2. ``onnx.version_converter`` down to ``TARGET_OPSET`` (17): ReduceMean-18 with a
   constant ``axes`` input becomes ReduceMean-13 with an ``axes`` attribute.
3. ``drop_noop_allowzero``: onnx2torch refuses ``Reshape(allowzero=1)``, which the
   dynamo exporter always writes; dropped where the shape is a constant without zeros.

and ``register_gru`` adds an ONNX GRU converter (``OnnxGRU``, the spec's equations) to
onnx2torch's registry. Keras GRUs reach ONNX as a Loop (tf2onnx's GRU rewriter matches
Keras 2 graphs only); the tensorflow plugin's export unrolls them instead
(interop_tensorflow.migrate), so no Loop converter is needed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

TARGET_OPSET = 17  # the newest opset whose every op onnx2torch 1.5.15 has a converter for


def opset_of(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def prepare(model: Any) -> Any:
    """``model`` rewritten and converted down so that onnx2torch can load it."""
    from onnx import version_converter

    expand_gelu(model)
    if opset_of(model) > TARGET_OPSET:
        model = version_converter.convert_version(model, TARGET_OPSET)
    drop_noop_allowzero(model)
    return model


def _constants(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    found = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def _elem_types(model: Any) -> dict[str, int]:
    """Value name -> ONNX element type, from shape inference (Gelu's constants match x)."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model).graph
    return {v.name: v.type.tensor_type.elem_type
            for v in [*inferred.input, *inferred.value_info, *inferred.output]}


def expand_gelu(model: Any) -> int:
    """Gelu(x) -> 0.5*x*(1+erf(x/sqrt 2)), or the tanh form for approximate="tanh". Its
    opset-20 schema has no predecessor, so it must go before converting down."""
    from onnx import helper, numpy_helper

    graph = model.graph
    if not any(n.op_type == "Gelu" and n.domain in ("", "ai.onnx") for n in graph.node):
        return 0
    types = _elem_types(model)
    nodes: list[Any] = []
    count = 0
    for node in graph.node:
        if node.op_type != "Gelu" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        count += 1
        x, y, p = node.input[0], node.output[0], f"{node.name or 'gelu'}_{count}_expanded"
        dtype = helper.tensor_dtype_to_np_dtype(types.get(x) or 1)

        def const(name: str, value: float, *, _p: str = p, _dt: Any = dtype) -> str:
            graph.initializer.append(numpy_helper.from_array(np.array(value, _dt), f"{_p}_{name}"))
            return f"{_p}_{name}"

        approximate = next((a.s.decode() for a in node.attribute if a.name == "approximate"),
                           "none")
        if approximate == "tanh":
            nodes += [helper.make_node("Mul", [x, x], [f"{p}_x2"]),
                      helper.make_node("Mul", [f"{p}_x2", x], [f"{p}_x3"]),
                      helper.make_node("Mul", [f"{p}_x3", const("c", 0.044715)], [f"{p}_cx3"]),
                      helper.make_node("Add", [x, f"{p}_cx3"], [f"{p}_inner"]),
                      helper.make_node("Mul", [f"{p}_inner", const("k", math.sqrt(2 / math.pi))],
                                       [f"{p}_arg"]),
                      helper.make_node("Tanh", [f"{p}_arg"], [f"{p}_t"])]
        else:
            nodes += [helper.make_node("Div", [x, const("sqrt2", math.sqrt(2.0))], [f"{p}_arg"]),
                      helper.make_node("Erf", [f"{p}_arg"], [f"{p}_t"])]
        nodes += [helper.make_node("Add", [f"{p}_t", const("one", 1.0)], [f"{p}_1t"]),
                  helper.make_node("Mul", [x, const("half", 0.5)], [f"{p}_hx"]),
                  helper.make_node("Mul", [f"{p}_hx", f"{p}_1t"], [y])]
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def drop_noop_allowzero(model: Any) -> None:
    constants = _constants(model)
    for node in model.graph.node:
        shape = constants.get(node.input[1]) if node.op_type == "Reshape" else None
        if shape is not None and 0 not in shape.tolist():
            kept = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(kept)


# --- GRU ------------------------------------------------------------------------------

class OnnxGRU(nn.Module):
    """ONNX GRU (opsets 7 and 14): gates z, r, h; default activations; no clip."""

    def __init__(self, hidden: int, direction: str, linear_before_reset: bool, layout: int,
                 outputs: int) -> None:
        super().__init__()
        self.hidden, self.direction = hidden, direction
        self.linear_before_reset, self.layout, self.outputs = linear_before_reset, layout, outputs

    def forward(self, x: torch.Tensor, w: torch.Tensor, r: torch.Tensor,
                b: torch.Tensor | None = None, sequence_lens: torch.Tensor | None = None,
                initial_h: torch.Tensor | None = None) -> Any:
        if self.layout == 1:  # [batch, seq, in] -> [seq, batch, in]
            x = x.transpose(0, 1)
            initial_h = None if initial_h is None else initial_h.transpose(0, 1)
        dirs = w.shape[0]
        if b is None:
            b = x.new_zeros(dirs, 6 * self.hidden)
        ys, hs = [], []
        for d in range(dirs):
            reverse = self.direction == "reverse" or d == 1
            h = (x.new_zeros(x.shape[1], self.hidden) if initial_h is None else initial_h[d])
            y, h = self._direction(x.flip(0) if reverse else x, w[d], r[d], b[d], h)
            ys.append(y.flip(0) if reverse else y)
            hs.append(h)
        y, h_last = torch.stack(ys, 1), torch.stack(hs, 0)  # [seq, D, batch, H], [D, batch, H]
        if self.layout == 1:
            y, h_last = y.permute(2, 0, 1, 3), h_last.transpose(0, 1)
        return (y, h_last)[: self.outputs] if self.outputs > 1 else y

    def _direction(self, x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor,
                   h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.hidden
        gx = x @ w.T + b[: 3 * n]  # every step's input projections at once
        rz, rr, rh = r[:n], r[n:2 * n], r[2 * n:]
        bz, br, bh = b[3 * n:4 * n], b[4 * n:5 * n], b[5 * n:]
        out = []
        for t in range(x.shape[0]):
            xz, xr, xh = gx[t, :, :n], gx[t, :, n:2 * n], gx[t, :, 2 * n:]
            z = torch.sigmoid(xz + h @ rz.T + bz)
            g = torch.sigmoid(xr + h @ rr.T + br)
            if self.linear_before_reset:
                cand = torch.tanh(xh + g * (h @ rh.T + bh))
            else:
                cand = torch.tanh(xh + (g * h) @ rh.T + bh)
            h = (1 - z) * cand + z * h
            out.append(h)
        return torch.stack(out, 0), h


def _gru_converter(node: Any, graph: Any) -> Any:
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    a = node.attributes
    if a.get("clip") is not None or a.get("activations") not in (None, ["Sigmoid", "Tanh"] * 2,
                                                                ["Sigmoid", "Tanh"]):
        raise NotImplementedError("GRU with clip or non-default activations")
    if len(node.input_values) > 4 and node.input_values[4]:
        raise NotImplementedError("GRU with sequence_lens (padded batches)")
    direction = a.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    module = OnnxGRU(int(a["hidden_size"]), direction, bool(a.get("linear_before_reset", 0)),
                     int(a.get("layout", 0)), outputs=len(node.output_values))
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


def register_gru(onnx2torch: Any) -> None:
    """Add the GRU converter to onnx2torch's registry once (it refuses duplicates)."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, add_converter

    for version in (7, 14):
        if not any(d.operation_type == "GRU" and d.version == version
                   for d in _CONVERTER_REGISTRY):
            add_converter(operation_type="GRU", version=version)(_gru_converter)
