"""A Keras model as a framework-neutral ModelGraph (see interop_runtime.ops.compat.modelgraph).

Read from the functional layer graph: each layer's first inbound node gives its
input tensors (named after the producing layer), so tensors and shapes are the
symbolic ones Keras built. A Dense or Conv2D with an activation becomes two ops
(linear + relu), as it is in every other framework. A SavedModel has no layer
graph: its signature's concrete function is walked instead (``_from_function``),
its TF ops grouped by the Keras layer scope in their names (``model/conv_1/...``),
each group typed by the ops it holds (Conv2D, MatMul, a While loop with gates,
the batch-norm arithmetic) and given the variables its ReadVariableOps read.
"""

from __future__ import annotations

from typing import Any

from interop_runtime import FunctionSpec, ModelGraph, OpInfo, ParamInfo, TensorInfo

from .runtime import import_keras
from .sources import FORWARD, Loaded
from .specs import image_layout, shape_list

_role = ParamInfo.role_from_name  # for parameters no op explains
_LAYERS = {
    "Dense": "linear", "Conv2D": "conv2d", "BatchNormalization": "batchnorm", "ReLU": "relu",
    "Softmax": "softmax", "MaxPooling2D": "maxpool2d", "AveragePooling2D": "avgpool2d",
    "GlobalAveragePooling2D": "global_avgpool", "Flatten": "flatten", "Reshape": "reshape",
    "Dropout": "dropout", "Add": "add", "Multiply": "mul", "Concatenate": "concat",
    "ZeroPadding2D": "pad", "Permute": "transpose", "Identity": "identity",
    "Embedding": "embedding", "LayerNormalization": "layernorm", "GRU": "gru", "LSTM": "lstm",
    "MultiHeadAttention": "attention",
}
_ROLES = {"kernel": "weight", "bias": "bias", "gamma": "gamma", "beta": "beta",
          "moving_mean": "running_mean", "moving_variance": "running_var",
          "recurrent_kernel": "recurrent_weight", "embeddings": "weight"}
_ROLE_KINDS = ("linear", "conv2d", "batchnorm", "layernorm", "embedding", "gru", "lstm")
_WEIGHT_LAYOUT = {"linear": "in,out", "conv2d": "HWIO", "embedding": "rows,dim"}  # Keras kernels, whatever data_format
_ACTIVATIONS = {"relu", "sigmoid", "tanh", "softmax", "gelu", "silu", "elu", "softplus"}


def build(loaded: Loaded) -> ModelGraph:
    """The neutral graph of a loaded model; parameters under the plugin's names."""
    owner, variables = loaded.owner, loaded.variables
    forward = loaded.functions.get(FORWARD)
    spec = forward.spec if forward else None
    if not isinstance(owner, import_keras().Model):
        try:
            return _from_function(loaded, spec)
        except Exception as exc:  # an unusual graph: say so, and match by name and shape
            graph = _variables_only(variables, spec)
            graph.notes.append(f"the SavedModel graph could not be read ({type(exc).__name__}: "
                               f"{str(exc)[:200]})")
            return graph
    names = {id(v): n for n, v in variables.items()}
    layout = image_layout(owner.layers)
    graph = ModelGraph(framework="tensorflow", name=owner.name)
    rename = _wire_names(owner, spec)
    for layer in owner.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        _add_layer(graph, layer, names, layout, rename)
    graph.inputs = [_tensor(rename.get(_hist(t), _hist(t)), t, layout) for t in owner.inputs]
    graph.outputs = [_tensor(rename.get(_hist(t), _hist(t)), t, layout) for t in owner.outputs]
    for t in graph.inputs:
        graph.tensors[t.name] = t
    return graph


def _hist(tensor: Any) -> str:
    """A symbolic tensor's name: its producing layer, with the output index if not 0."""
    op, _, index = tensor._keras_history
    return op.name if index == 0 else f"{op.name}:{index}"


def _wire_names(model: Any, spec: FunctionSpec | None) -> dict[str, str]:
    """Graph tensor name -> the name the worker's function uses for it on the wire."""
    if spec is None:
        return {}
    pairs = [*zip(model.inputs, spec.inputs), *zip(model.outputs, spec.outputs)]
    return {_hist(t): s.name for t, s in pairs}


def _tensor(name: str, tensor: Any, layout: str | None) -> TensorInfo:
    shape = shape_list(tuple(tensor.shape))
    return TensorInfo(name=name, shape=shape, dtype=str(tensor.dtype),
                      layout=layout if shape is not None and len(shape) == 4 else None)


def _add_layer(graph: ModelGraph, layer: Any, names: dict[int, str], layout: str | None,
               rename: dict[str, str]) -> None:
    cls = type(layer).__name__
    kind = _LAYERS.get(cls, f"other:{cls}")
    activation = _activation_name(layer)
    if cls == "Activation":
        kind = activation if activation in _ACTIVATIONS else f"other:{activation}"
        activation = None
    nodes = getattr(layer, "_inbound_nodes", None) or []
    ins = [rename.get(_hist(t), _hist(t)) for t in nodes[0].input_tensors] if nodes else []
    outs_t = list(nodes[0].output_tensors) if nodes else []
    out_names = [rename.get(n, n) for n in
                 (layer.name if i == 0 else f"{layer.name}:{i}" for i in range(len(outs_t)))]
    split = activation not in (None, "linear") and kind not in ("gru", "lstm")  # in the cell
    first_out = [f"{layer.name}:preact"] if split else out_names
    params = []
    for var in layer.weights:
        pname = names.get(id(var), var.path)
        leaf = var.path.rsplit("/", 1)[-1]
        role = _ROLES.get(leaf, _role(pname)) if kind in _ROLE_KINDS else _role(pname)
        graph.params.append(ParamInfo(
            name=pname, shape=[int(d) for d in var.shape], dtype=str(var.dtype), op=layer.name,
            role=role, layout=_WEIGHT_LAYOUT.get(kind) if role == "weight" else None,
            trainable=bool(var.trainable)))
        params.append(pname)
    graph.ops.append(OpInfo(name=layer.name, type=kind, framework_type=cls, inputs=ins,
                            outputs=first_out, attrs=_attrs(kind, layer), params=params))
    for name, t in zip(out_names, outs_t):
        graph.tensors[name] = _tensor(name, t, layout)
    if split:
        graph.tensors[first_out[0]] = _tensor(first_out[0], outs_t[0], layout)
        act_kind = activation if activation in _ACTIVATIONS else f"other:{activation}"
        graph.ops.append(OpInfo(name=f"{layer.name}/{activation}", type=act_kind,
                                framework_type=f"{cls}(activation={activation})",
                                inputs=first_out, outputs=out_names))


def _activation_name(layer: Any) -> str | None:
    fn = getattr(layer, "activation", None)
    if fn is None:
        return None
    return str(fn if isinstance(fn, str) else getattr(fn, "__name__", fn))


def _attrs(kind: str, layer: Any) -> dict[str, Any]:
    if kind == "linear":
        return {"in_features": int(layer.kernel.shape[0]), "out_features": int(layer.units)}
    if kind == "conv2d":
        return {"in_channels": int(layer.kernel.shape[2]) * int(layer.groups),
                "out_channels": int(layer.filters), "kernel": list(layer.kernel_size),
                "stride": list(layer.strides), "padding": layer.padding,
                "dilation": list(layer.dilation_rate), "groups": int(layer.groups),
                "data_format": layer.data_format}
    if kind == "batchnorm":
        return {"eps": float(layer.epsilon), "axis": layer.axis}
    if kind in ("maxpool2d", "avgpool2d"):
        return {"kernel": list(layer.pool_size), "stride": list(layer.strides),
                "padding": layer.padding}
    if kind == "softmax":
        return {"axis": layer.axis}
    return {}


def _variables_only(variables: dict[str, Any], spec: FunctionSpec | None) -> ModelGraph:
    def info(s: Any) -> TensorInfo:
        return TensorInfo(name=s.name, shape=s.shape, dtype=s.dtype, layout=s.layout)
    return ModelGraph(
        framework="tensorflow",
        notes=["no graph could be read: variables only, matched by name and shape"],
        inputs=[info(s) for s in (spec.inputs if spec else [])],
        outputs=[info(s) for s in (spec.outputs if spec else [])],
        params=[ParamInfo(name=n, shape=[int(d) for d in v.shape],
                          dtype=getattr(v.dtype, "name", str(v.dtype)), role=_role(n),
                          trainable=bool(v.trainable)) for n, v in variables.items()])


# --- SavedModel: the concrete function graph --------------------------------------------

# TF op types that say what a layer scope computes, strongest first
_TF_KINDS = (("While", "rnn"), ("Conv2D", "conv2d"), ("FusedBatchNormV3", "batchnorm"),
             ("Rsqrt", "norm"), ("ResourceGather", "embedding"), ("GatherV2", "embedding"),
             ("MatMul", "linear"), ("Relu", "relu"), ("Softmax", "softmax"),
             ("Sigmoid", "sigmoid"), ("Tanh", "tanh"), ("MaxPool", "maxpool2d"),
             ("Reshape", "reshape"))


def _scope(node_name: str) -> str:
    """'conv_rnn_1/conv_1/convolution' -> 'conv': the layer, without Keras' call suffix."""
    parts = node_name.split("/")
    layer = parts[1] if len(parts) > 2 else parts[0]
    head, _, tail = layer.rpartition("_")
    return head if head and tail.isdigit() else layer


def _from_function(loaded: Loaded, spec: FunctionSpec | None) -> ModelGraph:
    fn = next(f for f in loaded.owner.signatures.values())
    by_handle = {v.handle.ref(): n for n, v in loaded.variables.items()}
    captured = {inner.name.split(":")[0]: by_handle.get(ext.ref())
                for ext, inner in fn.graph.captures}
    library = {f.signature.name: f for f in fn.graph.as_graph_def().library.function}
    call = next(op for op in fn.graph.get_operations()
                if op.type in ("StatefulPartitionedCall", "PartitionedCall"))
    body = library[call.get_attr("f").name]
    args = {a.name: captured.get(t.name.split(":")[0])
            for a, t in zip(body.signature.input_arg, call.inputs)}
    groups: dict[str, dict[str, Any]] = {}
    reads: dict[str, str] = {}  # ReadVariableOp node -> variable name
    producer: dict[str, str] = {}  # node -> its scope
    for node in body.node_def:
        scope = _scope(node.name)
        g = groups.setdefault(scope, {"types": set(), "params": [], "inputs": []})
        producer[node.name] = scope
        g["types"].add(node.op)
        for src in node.input:
            base = src.split(":")[0].lstrip("^")
            if node.op == "ReadVariableOp" and args.get(base):
                reads[node.name] = args[base]
                g["params"].append(args[base])
            elif base in producer and producer[base] != scope and \
                    producer[base] not in g["inputs"]:
                g["inputs"].append(producer[base])
            elif base in args and args[base] is None and "input" not in g:
                g["input"] = base  # a signature argument
    if not reads:
        raise ValueError("no variable reads found in the signature's function")
    return _graph_of(groups, loaded, spec)


def _kind(types: set[str], params: list[str]) -> str:
    kind = next((k for t, k in _TF_KINDS if t in types), "other")
    if kind == "rnn":
        return "lstm" if any("lstm" in p for p in params) else "gru"
    if kind == "norm":
        return "batchnorm" if any("moving_mean" in p for p in params) else "layernorm"
    if kind in ("other", "reshape") and not params and types <= {"Identity", "Const", "NoOp"}:
        return "identity"
    return kind


def _graph_of(groups: dict[str, dict[str, Any]], loaded: Loaded, spec: FunctionSpec | None
              ) -> ModelGraph:
    variables = loaded.variables
    ins = list(spec.inputs) if spec else []
    outs = list(spec.outputs) if spec else []
    graph = ModelGraph(framework="tensorflow", name=None, notes=[
        "SavedModel: read from the signature's function graph, grouped by layer scope"])
    graph.inputs = [TensorInfo(name=s.name, shape=s.shape, dtype=s.dtype, layout=s.layout)
                    for s in ins]
    graph.outputs = [TensorInfo(name=s.name, shape=s.shape, dtype=s.dtype, layout=s.layout)
                     for s in outs]
    last = None
    for scope, g in groups.items():
        params = list(dict.fromkeys(g["params"]))
        kind = _kind(g["types"], params)
        if kind == "identity":
            continue  # constants, the signature's own Identity and NoOp
        names = []
        for pname in params:
            var = variables[pname]
            leaf = pname.rsplit("/", 1)[-1]
            role = _ROLES.get(leaf, _role(pname))
            graph.params.append(ParamInfo(
                name=pname, shape=[int(d) for d in var.shape],
                dtype=getattr(var.dtype, "name", str(var.dtype)), op=scope, role=role,
                layout=_WEIGHT_LAYOUT.get(kind) if role == "weight" else None,
                trainable=bool(var.trainable)))
            names.append(pname)
        inputs = [f"{i}:out" for i in g["inputs"]] or ([graph.inputs[0].name] if graph.inputs
                                                       and "input" in g else [])
        graph.ops.append(OpInfo(name=scope, type=kind, framework_type="+".join(sorted(
            g["types"] - {"Const", "Identity", "NoOp", "ReadVariableOp"}))[:120],
            inputs=inputs, outputs=[f"{scope}:out"], params=names,
            attrs=_function_attrs(kind, graph, names)))
        last = scope
    if last is not None and graph.outputs:
        graph.ops[-1].outputs = [graph.outputs[0].name]
    return graph


def _function_attrs(kind: str, graph: ModelGraph, names: list[str]) -> dict[str, Any]:
    weight = next((graph.param(n) for n in names if n.endswith("/kernel")), None)
    if kind == "linear" and weight is not None and len(weight.shape) == 2:
        return {"in_features": weight.shape[0], "out_features": weight.shape[1]}
    if kind == "conv2d" and weight is not None and len(weight.shape) == 4:
        return {"in_channels": weight.shape[2], "out_channels": weight.shape[3],
                "kernel": weight.shape[:2]}
    return {}
