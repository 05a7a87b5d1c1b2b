"""An ONNX model as a framework-neutral ModelGraph (see interop_runtime.ops.compat.modelgraph).

Ops are the graph's nodes; parameters are the initializers the nodes read, under
their initializer names (what PARAM get returns). Tensor shapes come from ONNX
shape inference. A MatMul by an initializer followed by an Add of an initializer
(the tf2onnx form of a Dense layer) is read as one linear op with a bias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper, shape_inference

from interop_runtime import ModelGraph, OpInfo, ParamInfo, TensorInfo

_OPS = {
    "Gemm": "linear", "Conv": "conv2d", "BatchNormalization": "batchnorm", "Relu": "relu",
    "Sigmoid": "sigmoid", "Tanh": "tanh", "Gelu": "gelu", "Softmax": "softmax",
    "LogSoftmax": "log_softmax", "MaxPool": "maxpool2d", "AveragePool": "avgpool2d",
    "GlobalAveragePool": "global_avgpool", "Flatten": "flatten", "Reshape": "reshape",
    "Squeeze": "reshape", "Unsqueeze": "reshape", "Transpose": "transpose", "Add": "add",
    "Mul": "mul", "Concat": "concat", "MatMul": "matmul", "Identity": "identity",
    "Dropout": "dropout", "Cast": "cast", "Constant": "constant", "Pad": "pad",
}
# learned inputs by position (the first is the data)
_ROLES = {"linear": [None, "weight", "bias"], "conv2d": [None, "weight", "bias"],
          "batchnorm": [None, "gamma", "beta", "running_mean", "running_var"],
          "matmul": [None, "weight"]}
_CHANNELS_FIRST = {"Conv", "MaxPool", "AveragePool", "BatchNormalization", "GlobalAveragePool"}
_ELEMENTWISE = {"Relu", "Sigmoid", "Tanh", "Gelu", "Add", "Mul", "Identity", "Dropout", "Cast"}
_WIRE = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64",
         TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16",
         TensorProto.INT8: "int8", TensorProto.INT16: "int16", TensorProto.INT32: "int32",
         TensorProto.INT64: "int64", TensorProto.UINT8: "uint8", TensorProto.UINT16: "uint16",
         TensorProto.UINT32: "uint32", TensorProto.UINT64: "uint64", TensorProto.BOOL: "bool"}


def build(path: str | Path) -> ModelGraph:
    model = onnx.load(str(path), load_external_data=False)  # dims are there without data
    notes: list[str] = []
    try:
        model = shape_inference.infer_shapes(model)
    except Exception as exc:
        notes.append(f"ONNX shape inference failed ({type(exc).__name__}): no inner shapes")
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    tensors = {v.name: _value_info(v) for v in [*g.input, *g.value_info, *g.output]
               if v.name not in inits}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    fused: set[int] = set()  # Add nodes folded into the MatMul before them
    ops: list[OpInfo] = []
    params: dict[str, ParamInfo] = {}
    for index, node in enumerate(g.node):
        if id(node) in fused:
            continue
        kind = _OPS.get(node.op_type, f"other:{node.op_type}")
        name = node.name or f"{node.op_type}_{index}"
        attrs = {a.name: _attr(helper.get_attribute_value(a)) for a in node.attribute}
        inputs, outputs = list(node.input), list(node.output)
        bias_add = _bias_add(node, inits, consumers) if kind == "matmul" else None
        if bias_add is not None:
            fused.add(id(bias_add))
            kind, outputs = "linear", list(bias_add.output)
            inputs = [*inputs, next(i for i in bias_add.input if i in inits)]
        roles = _ROLES.get(kind, [])
        op_params = []
        for pos, tensor in enumerate(inputs):
            if tensor not in inits:
                continue
            role = roles[pos] if pos < len(roles) and roles[pos] else "constant"
            params[tensor] = ParamInfo(
                name=tensor, shape=[int(d) for d in inits[tensor].dims],
                dtype=_WIRE.get(inits[tensor].data_type), op=name, role=role,
                layout=_layout(node, kind, attrs) if role == "weight" else None,
                trainable=role not in ("running_mean", "running_var", "constant"))
            op_params.append(tensor)
        if kind == "matmul" and op_params:
            kind = "linear"  # x @ W with a learned W is a bias-free linear layer
        _mark_layout(node, tensors)
        ops.append(OpInfo(name=name, type=kind, framework_type=node.op_type,
                          inputs=[i for i in inputs if i and i not in inits], outputs=outputs,
                          attrs=_norm_attrs(kind, attrs, params, op_params), params=op_params))
    model_ins = [tensors[v.name] for v in g.input if v.name not in inits]
    model_outs = [tensors[v.name] for v in g.output]
    return ModelGraph(framework="onnx", name=g.name or Path(path).stem, inputs=model_ins,
                      outputs=model_outs, ops=ops, tensors=tensors, params=list(params.values()),
                      notes=notes)


def _value_info(v: onnx.ValueInfoProto) -> TensorInfo:
    t = v.type.tensor_type
    shape = ([d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
             if t.HasField("shape") else None)
    return TensorInfo(name=v.name, shape=shape, dtype=_WIRE.get(t.elem_type))


def _mark_layout(node: onnx.NodeProto, tensors: dict[str, TensorInfo]) -> None:
    """ONNX's image ops are channels-first by definition; elementwise ops pass it on."""
    data = [tensors[n] for n in node.input[:1] if n in tensors]
    outs = [tensors[n] for n in node.output if n in tensors]
    if node.op_type in _CHANNELS_FIRST:
        for t in [*data, *outs]:
            if t.shape is not None and len(t.shape) == 4:
                t.layout = "NCHW"
    elif node.op_type in _ELEMENTWISE and data and data[0].layout:
        for t in outs:
            t.layout = data[0].layout


def _bias_add(node: onnx.NodeProto, inits: dict[str, Any],
              consumers: dict[str, list[onnx.NodeProto]]) -> onnx.NodeProto | None:
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add" and \
            sum(i in inits for i in users[0].input) == 1:
        return users[0]
    return None


def _layout(node: onnx.NodeProto, kind: str, attrs: dict[str, Any]) -> str | None:
    if kind == "conv2d":
        return "OIHW"
    if node.op_type == "Gemm":
        return "out,in" if attrs.get("transB") else "in,out"
    return "in,out" if kind in ("linear", "matmul") else None


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_attr(v) for v in value]
    return value if isinstance(value, (int, float, str)) else str(type(value).__name__)


def _norm_attrs(kind: str, attrs: dict[str, Any], params: dict[str, ParamInfo],
                names: list[str]) -> dict[str, Any]:
    """ONNX attribute names as the neutral ones (kernel, stride, padding, eps)."""
    weight = next((params[n] for n in names if params[n].role == "weight"), None)
    out: dict[str, Any] = {}
    if kind == "linear" and weight is not None and len(weight.shape) == 2:
        o, i = weight.shape if weight.layout == "out,in" else weight.shape[::-1]
        out = {"in_features": i, "out_features": o}
    elif kind == "conv2d" and weight is not None:
        out = {"out_channels": weight.shape[0], "kernel": weight.shape[2:],
               "groups": attrs.get("group", 1),
               "in_channels": weight.shape[1] * attrs.get("group", 1)}
    elif kind == "batchnorm":
        return {"eps": float(attrs.get("epsilon", 1e-5))}
    elif kind == "softmax":
        return {"axis": attrs.get("axis", -1)}
    if kind in ("conv2d", "maxpool2d", "avgpool2d"):
        kernel = attrs.get("kernel_shape", out.get("kernel"))
        rank = len(kernel or [0, 0])
        pads = attrs.get("pads", [0] * 2 * rank)
        symmetric = pads[:rank] == pads[rank:]
        out.update({"kernel": kernel, "stride": attrs.get("strides", [1] * rank),
                    "padding": pads[:rank] if symmetric else pads,
                    **({"dilation": attrs.get("dilations", [1] * rank)}
                       if kind == "conv2d" else {})})
        auto = attrs.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):
            out["padding"] = "valid" if auto == "VALID" else "same"
    return out
