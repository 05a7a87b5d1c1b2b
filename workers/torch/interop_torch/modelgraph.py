"""A torch model as a framework-neutral ModelGraph (see interop_runtime.ops.compat.modelgraph).

Best first: torch.export on example inputs built from the declared input specs
(ATen ops with shapes; parameters from the graph signature); else FX symbolic
tracing (module calls, no shapes); else the state_dict alone, with roles guessed
from names (models nothing can trace). A TorchScript model is walked from its
inlined graph instead (torchscript_graph.py).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from interop_runtime import (
    FunctionSpec,
    ModelGraph,
    OpInfo,
    ParamInfo,
    TensorInfo,
    TensorSpec,
)

from . import aten_ops
from .convert import WIRE_TO_TORCH, wire_name

_role = ParamInfo.role_from_name  # for parameters no op explains
_ATEN, _ROLES, _WEIGHT_LAYOUT = aten_ops.ATEN, aten_ops.ROLES, aten_ops.WEIGHT_LAYOUT
# nn.Module class -> normalized type, for the FX fallback
_MODULES = {
    "Linear": "linear", "Conv2d": "conv2d", "BatchNorm1d": "batchnorm", "BatchNorm2d": "batchnorm",
    "ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "GELU": "gelu", "Softmax": "softmax",
    "MaxPool2d": "maxpool2d", "AvgPool2d": "avgpool2d", "AdaptiveAvgPool2d": "global_avgpool",
    "Flatten": "flatten", "Dropout": "dropout", "Identity": "identity", "LayerNorm": "layernorm",
    "Embedding": "embedding",
}
_MODULE_ROLES = {"weight": "weight", "bias": "bias", "running_mean": "running_mean",
                 "running_var": "running_var", "num_batches_tracked": "num_batches_tracked"}


def build(model: nn.Module, spec: FunctionSpec | None) -> ModelGraph:
    """The neutral graph of ``model``'s forward, whose declared signature is ``spec``."""
    notes: list[str] = []
    ins = list(spec.inputs) if spec else []
    outs = list(spec.outputs) if spec else []
    if isinstance(model, torch.jit.ScriptModule):
        from . import torchscript_graph

        try:
            return torchscript_graph.build(model, ins, outs)
        except Exception as exc:  # an unusual scripted graph: say so, match by name and shape
            graph = _params_only(model, ins, outs)
            graph.notes.append(f"the TorchScript graph could not be read ({type(exc).__name__}: "
                               f"{str(exc)[:200]}); parameters only")
            return graph
    examples = _examples(ins)
    if examples is None and (guessed := _guess_inputs(model, ins)) is not None:
        notes.append(f"input shape guessed from the first layer: {guessed[0].shape}")
        ins, examples = guessed, _examples(guessed)
    if examples is not None:
        try:
            graph = _from_export(model, examples, ins, outs)
            graph.notes = notes + graph.notes
            return graph
        except Exception as exc:
            notes.append(f"torch.export failed ({type(exc).__name__}: {str(exc)[:200]}); "
                         "used FX symbolic tracing")
    else:
        notes.append("inputs declare no full dtype and shape, so torch.export cannot run; "
                     "used FX symbolic tracing (no tensor shapes)")
    try:
        graph = _from_fx(model, ins, outs)
    except Exception as exc:
        notes.append(f"FX tracing failed ({type(exc).__name__}); parameters only")
        graph = _params_only(model, ins, outs)
    graph.notes = notes + graph.notes
    return graph


# --- torch.export -----------------------------------------------------------------------

def _examples(specs: Sequence[TensorSpec]) -> list[torch.Tensor] | None:
    """Example inputs: 2 for a dynamic batch, 32 for other dynamic dims (big enough for
    a few poolings); None when a dtype or rank is unknown."""
    if not specs or any(s.dtype is None or s.shape is None for s in specs):
        return None
    out = []
    for s in specs:
        shape = [d if d is not None else (2 if i == 0 else 32) for i, d in enumerate(s.shape or [])]
        out.append(torch.zeros(shape, dtype=WIRE_TO_TORCH[s.dtype or "float32"]))
    return out


def _guess_inputs(model: nn.Module, ins: list[TensorSpec]) -> list[TensorSpec] | None:
    """(batch, in_features) float32 for a one-input model whose first layer is a Linear
    (the usual MLP whose worker config declares no shapes); if the guess is wrong,
    export fails and FX takes over."""
    if len(ins) != 1 or ins[0].shape is not None:
        return None
    first = next((m for m in model.modules() if not list(m.children())), None)
    if not isinstance(first, nn.Linear):
        return None
    return [TensorSpec(name=ins[0].name, dtype=ins[0].dtype or "float32",
                       shape=[None, first.in_features], layout=ins[0].layout)]


def _from_export(model: nn.Module, examples: list[torch.Tensor], ins: list[TensorSpec],
                 outs: list[TensorSpec]) -> ModelGraph:
    auto = torch.export.Dim.AUTO
    dynamic = tuple({i: auto for i, d in enumerate(s.shape or []) if d is None} for s in ins)
    try:
        program = torch.export.export(model, tuple(examples), dynamic_shapes=dynamic)
    except Exception:
        program = torch.export.export(model, tuple(examples))
    sig = program.graph_signature
    owned = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}  # placeholder -> state name
    state = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    params: dict[str, ParamInfo] = {}
    ops: list[OpInfo] = []
    tensors: dict[str, TensorInfo] = {}
    used_names: set[str] = set()
    rename = {ph: spec.name for ph, spec in zip(sig.user_inputs, ins)}
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    out_args = [a for a in out_node.args[0] if isinstance(a, torch.fx.Node)]
    rename.update({a.name: spec.name for a, spec in zip(out_args, outs)})

    def tname(node: torch.fx.Node) -> str:
        return rename.get(node.name, node.name)

    for node in program.graph.nodes:
        if node.op == "placeholder":
            if node.name not in owned:
                tensors[tname(node)] = _tensor_info(tname(node), node)
            continue
        if node.op != "call_function":
            continue
        target = node.target
        if target is operator.getitem:  # one output of a multi-output op
            kind, fw = "identity", "getitem"
        else:
            fw = str(target)
            packet = fw.split(".")[1] if fw.startswith("aten.") else fw
            kind = _ATEN.get(packet, f"other:{packet}")
            kind = _refine(kind, node)
        name = _op_name(node, used_names)
        tensor_args = [a for a in _flat_args(node.args) if isinstance(a, torch.fx.Node)]
        op_params = []
        addmm = fw.startswith("aten.addmm")
        roles = aten_ops.ADDMM_ROLES if addmm else _ROLES.get(kind, [])
        for pos, arg in enumerate(node.args if kind not in aten_ops.MOVES_DATA else ()):
            layout = _WEIGHT_LAYOUT.get(kind)
            if addmm and pos == 2:  # x @ W: W is (in, out), or (out, in) behind a transpose
                arg, layout = _through_transpose(arg, owned)
            if isinstance(arg, torch.fx.Node) and arg.name in owned:
                pname = owned[arg.name]
                role = (roles[pos] if pos < len(roles) else None) or _role(pname)
                value = state.get(pname)
                if value is None:  # a non-persistent buffer: not a parameter clients can set
                    continue
                params[pname] = ParamInfo(
                    name=pname, shape=list(value.shape), dtype=wire_name(value.dtype), op=name,
                    role=role, layout=layout if role == "weight" else None,
                    trainable=pname in trainable)
                op_params.append(pname)
        out_info = _tensor_info(tname(node), node)
        tensors[out_info.name] = out_info
        ops.append(OpInfo(name=name, type=kind, framework_type=fw,
                          inputs=[tname(a) for a in tensor_args if a.name not in owned],
                          outputs=[out_info.name], attrs=_attrs(kind, node, params, op_params),
                          params=op_params))
    _add_unused(params, state, trainable, ops)
    model_ins = [tensors.get(s.name) or TensorInfo(name=s.name) for s in ins]
    for t, s in zip(model_ins, ins):
        t.layout = s.layout or t.layout
    model_outs = [tensors.get(s.name) or TensorInfo(name=s.name) for s in outs]
    return ModelGraph(framework="torch", name=type(model).__name__, inputs=model_ins,
                      outputs=model_outs, ops=ops, tensors=tensors, params=list(params.values()))


def _flat_args(args: Any) -> list[Any]:
    out: list[Any] = []
    for a in args:
        out.extend(_flat_args(a) if isinstance(a, (list, tuple)) else [a])
    return out


def _refine(kind: str, node: torch.fx.Node) -> str:
    """A view/reshape from an image to (batch, features) is a flatten; an add with a
    scalar is not a residual add."""
    if kind == "reshape":
        src = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
        val = node.meta.get("val")
        if isinstance(src, torch.Tensor) and isinstance(val, torch.Tensor) \
                and src.dim() > 2 and val.dim() == 2:
            return "flatten"
    if kind in ("add", "mul") and sum(isinstance(a, torch.fx.Node) for a in node.args) < 2:
        return f"other:{kind}_scalar"
    if kind == "global_avgpool":
        size = node.args[1] if len(node.args) > 1 else None
        if list(size or []) != [1, 1]:
            return "avgpool2d"
    return kind


def _op_name(node: torch.fx.Node, used: set[str]) -> str:
    """The owning module's path (``conv``, ``layer1.0.conv1``), which names the parameters
    too; the node's own name when a module holds several ops."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    name = path if path and path not in used else (f"{path}/{node.name}" if path else node.name)
    used.add(name)
    return name


def _tensor_info(name: str, node: torch.fx.Node) -> TensorInfo:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return TensorInfo(name=name)
    shape = [d if isinstance(d, int) else None for d in val.shape]  # SymInt: dynamic
    # torch's convolutions are channels-first, so its images are NCHW
    return TensorInfo(name=name, shape=shape, dtype=wire_name(val.dtype),
                      layout="NCHW" if len(shape) == 4 else None)


def _ints(value: Any, n: int = 2) -> list[int] | Any:
    if isinstance(value, int):
        return [value] * n
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value] if len(value) == n else [int(value[0])] * n if value else []
    return value


def _through_transpose(arg: Any, owned: dict[str, str]) -> tuple[Any, str]:
    """addmm's W argument: a parameter read as (in, out), or a transpose of one (out, in)."""
    if isinstance(arg, torch.fx.Node) and arg.op == "call_function" and arg.args \
            and aten_ops.packet(str(arg.target)) in aten_ops.TRANSPOSES:
        src = arg.args[0]
        if isinstance(src, torch.fx.Node) and src.name in owned:
            return src, "out,in"
    return arg, "in,out"


def _attrs(kind: str, node: torch.fx.Node, params: dict[str, ParamInfo] | None = None,
           op_params: list[str] | None = None) -> dict[str, Any]:
    a = list(node.args)
    weight = a[1].meta.get("val") if len(a) > 1 and isinstance(a[1], torch.fx.Node) else None
    mine = [params[n] for n in op_params or [] if params and n in params]
    if kind in ("linear", "embedding", "layernorm", "attention"):
        return common_attrs(kind, mine, _eps(node) if kind == "layernorm" else None,
                            _heads(a[0]) if kind == "attention" and a else {})
    if kind == "conv2d" and isinstance(weight, torch.Tensor):
        padding = a[4] if len(a) > 4 else 0
        return {"in_channels": int(weight.shape[1]) * int(a[6] if len(a) > 6 else 1),
                "out_channels": int(weight.shape[0]), "kernel": list(weight.shape[2:]),
                "stride": _ints(a[3] if len(a) > 3 else 1),
                "padding": padding if isinstance(padding, str) else _ints(padding),
                "dilation": _ints(a[5] if len(a) > 5 else 1),
                "groups": int(a[6]) if len(a) > 6 else 1}
    if kind == "batchnorm":
        eps = a[7] if str(node.target).startswith("aten.batch_norm") else a[6]
        return {"eps": float(eps)}
    if kind in ("maxpool2d", "avgpool2d"):
        kernel = _ints(a[1])
        stride = _ints(a[2]) if len(a) > 2 and a[2] else kernel  # [] means = kernel
        return {"kernel": kernel, "stride": stride, "padding": _ints(a[3] if len(a) > 3 else 0)}
    if kind == "softmax":
        return {"axis": int(a[1])} if len(a) > 1 else {}
    return {}


def _eps(node: torch.fx.Node) -> float | None:
    eps = node.args[4] if len(node.args) > 4 else 1e-5
    return float(eps) if isinstance(eps, (int, float)) else None


def _heads(query: Any) -> dict[str, int]:
    """Heads and head size from the query's (batch, heads, seq, head_dim) shape."""
    val = query.meta.get("val") if isinstance(query, torch.fx.Node) else None
    if isinstance(val, torch.Tensor) and val.dim() == 4 \
            and all(isinstance(d, int) for d in val.shape[1:4:2]):
        return {"heads": int(val.shape[1]), "head_dim": int(val.shape[3])}
    return {}


def common_attrs(kind: str, params: list[ParamInfo], eps: float | None,
                 heads: dict[str, int]) -> dict[str, Any]:
    """Attributes of the ops both torch walks read the same way, from their parameters."""
    weight = next((p for p in params if p.role in ("weight", "gamma")), None)
    if kind == "linear" and weight is not None and len(weight.shape) == 2:
        return aten_ops.linear_attrs(weight.shape, weight.layout or "out,in")
    if kind == "embedding" and weight is not None and len(weight.shape) == 2:
        return {"num_embeddings": weight.shape[0], "embedding_dim": weight.shape[1]}
    if kind == "layernorm":
        return {"eps": eps} if eps is not None else {}
    return dict(heads) if kind == "attention" else {}


def _add_unused(params: dict[str, ParamInfo], state: dict[str, torch.Tensor],
                trainable: set[str], ops: list[OpInfo]) -> None:
    """State entries no op reads (num_batches_tracked): listed, and tied to the op that
    owns their siblings, so a report can say they need no counterpart."""
    by_prefix = {p.name.rsplit(".", 1)[0]: p.op for p in params.values()}
    for name, value in state.items():
        if name in params:
            continue
        op = by_prefix.get(name.rsplit(".", 1)[0])
        params[name] = ParamInfo(name=name, shape=list(value.shape), dtype=wire_name(value.dtype),
                                 op=op, role=state_role(name, value), trainable=name in trainable)
        for o in ops:
            if o.name == op:
                o.params.append(name)


# --- FX and parameters-only fallbacks ----------------------------------------------------

def _from_fx(model: nn.Module, ins: list[TensorSpec], outs: list[TensorSpec]) -> ModelGraph:
    traced = torch.fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    state = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    rename: dict[str, str] = {}
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    rename.update({n.name: s.name for n, s in zip(placeholders, ins)})
    out_node = next(n for n in traced.graph.nodes if n.op == "output")
    results = out_node.args[0] if isinstance(out_node.args[0], (tuple, list)) else [out_node.args[0]]
    rename.update({a.name: s.name for a, s in zip(results, outs) if isinstance(a, torch.fx.Node)})
    ops: list[OpInfo] = []
    params: dict[str, ParamInfo] = {}
    for node in traced.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        prefix = ""
        if node.op == "call_module":
            cls = type(modules[node.target]).__name__
            kind, fw, name, prefix = _MODULES.get(cls, f"other:{cls}"), cls, node.target, node.target
        else:
            fw = getattr(node.target, "__name__", str(node.target))
            kind, name = _ATEN.get(fw, f"other:{fw}"), node.name
        op_params = []
        for key, value in state.items():
            if prefix and key.rsplit(".", 1)[0] == prefix:
                leaf = key.rsplit(".", 1)[1]
                role = _MODULE_ROLES.get(leaf, "other")
                if kind in ("batchnorm", "layernorm"):
                    role = {"weight": "gamma", "bias": "beta"}.get(role, role)
                params[key] = ParamInfo(
                    name=key, shape=list(value.shape), dtype=wire_name(value.dtype), op=name,
                    role=role, layout=_WEIGHT_LAYOUT.get(kind) if role == "weight" else None,
                    trainable=key in trainable)
                op_params.append(key)
        args = [a for a in _flat_args(node.args) if isinstance(a, torch.fx.Node)]
        ops.append(OpInfo(name=name, type=kind, framework_type=fw,
                          inputs=[rename.get(a.name, a.name) for a in args],
                          outputs=[rename.get(node.name, node.name)], params=op_params,
                          attrs=_module_attrs(modules[node.target]) if prefix else {}))
    _add_unused(params, state, trainable, ops)
    return ModelGraph(framework="torch", name=type(model).__name__,
                      inputs=[TensorInfo(**s.model_dump(include={"name", "shape", "dtype",
                                                                 "layout"})) for s in ins],
                      outputs=[TensorInfo(**s.model_dump(include={"name", "shape", "dtype",
                                                                  "layout"})) for s in outs],
                      ops=ops, params=list(params.values()))


def _module_attrs(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features}
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        return {"in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel": list(module.kernel_size), "stride": list(module.stride),
                "padding": padding if isinstance(padding, str) else list(padding),
                "dilation": list(module.dilation), "groups": module.groups}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"eps": module.eps}
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _ints(module.kernel_size)
        return {"kernel": kernel, "stride": _ints(module.stride) or kernel,
                "padding": _ints(module.padding)}
    return {}


def state_role(name: str, value: torch.Tensor) -> str:
    """A role from the name; integer buffers other than counters (position ids) are constants."""
    role = _role(name)
    if role == "other" and not (value.is_floating_point() or value.is_complex()):
        return "constant"
    return role


def _params_only(model: nn.Module, ins: list[TensorSpec], outs: list[TensorSpec]) -> ModelGraph:
    state = model.state_dict()
    return ModelGraph(
        framework="torch", name=type(model).__name__,
        inputs=[TensorInfo(name=s.name, shape=s.shape, dtype=s.dtype, layout=s.layout) for s in ins],
        outputs=[TensorInfo(name=s.name, shape=s.shape, dtype=s.dtype, layout=s.layout)
                 for s in outs],
        params=[ParamInfo(name=n, shape=list(v.shape), dtype=wire_name(v.dtype),
                          role=state_role(n, v)) for n, v in state.items()],
        notes=["no graph could be traced: parameters only, matched by name and shape"])
