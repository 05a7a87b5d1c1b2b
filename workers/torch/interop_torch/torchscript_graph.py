"""A TorchScript model as a framework-neutral ModelGraph, from its inlined graph.

A loaded TorchScript archive has no Python modules to trace, but its inlined graph
holds every ATen call, and each parameter reaches it through a ``prim::GetAttr``
chain from ``self`` that spells its state_dict name. The graph records no shapes, so
shapes come from the parameters, and attention heads from the constant sizes of the
view that splits the query into (batch, seq, heads, head_dim).
"""

from __future__ import annotations

from typing import Any

import torch

from interop_runtime import ModelGraph, OpInfo, ParamInfo, TensorInfo, TensorSpec

from . import aten_ops
from .convert import wire_name
from .modelgraph import common_attrs, state_role

# prim ops that only build Python values or read attributes: not ops of the model
_SKIP = frozenset({"prim::Constant", "prim::GetAttr", "prim::ListConstruct",
                   "prim::TupleConstruct", "prim::DictConstruct", "prim::NumToTensor",
                   "prim::TupleUnpack", "aten::Int", "aten::ScalarImplicit", "aten::size",
                   "prim::device", "prim::dtype"})
_LIST_UNPACK = "prim::ListUnpack"  # outputs of split/chunk: dataflow continues through it


def build(model: torch.jit.ScriptModule, ins: list[TensorSpec], outs: list[TensorSpec]
          ) -> ModelGraph:
    graph = model.inlined_graph
    state = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    inputs = list(graph.inputs())
    paths: dict[str, str] = {inputs[0].debugName(): ""}  # value -> attribute path from self
    rename = {v.debugName(): s.name for v, s in zip(inputs[1:], ins)}
    ret = graph.return_node().inputsAt(0)
    results = _results(ret)
    rename.update({v.debugName(): s.name for v, s in zip(results, outs)})
    params: dict[str, ParamInfo] = {}
    ops: list[OpInfo] = []
    used: set[str] = set()

    def tname(v: Any) -> str:
        return rename.get(v.debugName(), v.debugName())

    for node in graph.nodes():
        kind_fw = node.kind()
        if kind_fw == "prim::GetAttr":
            src = node.inputsAt(0).debugName()
            if src in paths:
                base = paths[src]
                paths[node.outputsAt(0).debugName()] = (f"{base}." if base else "") + node.s("name")
            continue
        if kind_fw in _SKIP:
            continue
        pkt = aten_ops.packet(kind_fw)
        kind = "split" if kind_fw == _LIST_UNPACK else aten_ops.ATEN.get(pkt, f"other:{pkt}")
        args = list(node.inputs())
        kind = _refine(kind, node, args)
        op_params: list[str] = []
        roles = aten_ops.ADDMM_ROLES if pkt == "addmm" else aten_ops.ROLES.get(kind, [])
        for pos, arg in enumerate(args):
            layout = aten_ops.WEIGHT_LAYOUT.get(kind)
            if pkt == "addmm" and pos == 2:
                arg, layout = _through_transpose(arg, paths)
            pname = paths.get(arg.debugName())
            if not pname or pname not in state:
                continue
            role = (roles[pos] if pos < len(roles) else None) or state_role(pname, state[pname])
            value = state[pname]
            params[pname] = ParamInfo(
                name=pname, shape=list(value.shape), dtype=wire_name(value.dtype),
                op=None, role=role, layout=layout if role == "weight" else None,
                trainable=pname in trainable)
            op_params.append(pname)
        name = _op_name(op_params, pkt, node, used)
        for pname in op_params:
            params[pname].op = name
        heads = _heads(args[0]) if kind == "attention" else {}
        eps = _eps(args) if kind == "layernorm" else None
        tensor_args = [a for a in args if _is_tensor(a) and a.debugName() not in paths]
        ops.append(OpInfo(name=name, type=kind, framework_type=kind_fw,
                          inputs=[tname(a) for a in tensor_args],
                          outputs=[tname(o) for o in node.outputs()],
                          attrs=common_attrs(kind, [params[n] for n in op_params], eps, heads),
                          params=op_params))
    _add_unread(params, state, trainable)
    return ModelGraph(
        framework="torch", name=str(getattr(model, "original_name", type(model).__name__)),
        inputs=[TensorInfo(name=s.name, shape=s.shape, dtype=s.dtype, layout=s.layout) for s in ins],
        outputs=[TensorInfo(name=s.name, shape=s.shape, dtype=s.dtype, layout=s.layout)
                 for s in outs],
        ops=ops, params=list(params.values()),
        notes=["TorchScript: read from the inlined graph (no tensor shapes recorded)"])


def _results(ret: Any) -> list[Any]:
    """The tensors a forward returns, through a tuple or dict it builds."""
    node = ret.node()
    if node.kind() == "prim::TupleConstruct":
        return list(node.inputs())
    if node.kind() == "prim::DictConstruct":
        return list(node.inputs())[1::2]  # key, value, key, value, ...
    return [ret]


def _is_tensor(value: Any) -> bool:
    return isinstance(value.type(), (torch.TensorType, torch.ListType))


def _refine(kind: str, node: Any, args: list[Any]) -> str:
    """An add/mul with a scalar is not a residual add (as in the torch.export walk)."""
    if kind in ("add", "mul") and sum(isinstance(a.type(), torch.TensorType)
                                      and a.node().kind() != "prim::Constant"
                                      for a in args[:2]) < 2:
        return f"other:{kind}_scalar"
    return kind


def _through_transpose(arg: Any, paths: dict[str, str]) -> tuple[Any, str]:
    node = arg.node()
    if aten_ops.packet(node.kind()) in aten_ops.TRANSPOSES and node.inputsAt(0).debugName() in paths:
        return node.inputsAt(0), "out,in"
    return arg, "in,out"


def _op_name(op_params: list[str], pkt: str, node: Any, used: set[str]) -> str:
    """The owning module's path, as torch.export names ops (``encoder.layer.0.attention.
    self.query``); otherwise the op and its output value (``sdpa/attn_output.2``)."""
    owner = op_params[0].rsplit(".", 1)[0] if op_params else ""
    name = owner if owner and owner not in used else \
        f"{owner or pkt}/{node.outputsAt(0).debugName()}" if node.outputsSize() else pkt
    while name in used:
        name += "_"
    used.add(name)
    return name


def _constant(value: Any) -> Any:
    return value.toIValue() if value.node().kind() == "prim::Constant" else None


def _eps(args: list[Any]) -> float | None:
    eps = _constant(args[4]) if len(args) > 4 else None
    return float(eps) if isinstance(eps, (int, float)) else None


def _heads(query: Any) -> dict[str, int]:
    """From the view before the query's transpose: sizes (batch, seq, heads, head_dim)
    with constant heads (or -1) and head_dim."""
    node = query.node()
    for _ in range(4):  # transpose / contiguous / view: a short chain
        if aten_ops.packet(node.kind()) in ("view", "reshape"):
            sizes = node.inputsAt(1).node()
            if sizes.kind() != "prim::ListConstruct" or sizes.inputsSize() != 4:
                return {}
            heads, dim = (_constant(sizes.inputsAt(i)) for i in (2, 3))
            out = {"head_dim": int(dim)} if isinstance(dim, int) and dim > 0 else {}
            if isinstance(heads, int) and heads > 0:
                out["heads"] = heads
            return out
        if node.inputsSize() == 0:
            return {}
        node = node.inputsAt(0).node()
    return {}


def _add_unread(params: dict[str, ParamInfo], state: dict[str, torch.Tensor],
                trainable: set[str]) -> None:
    """State entries no op reads directly (buffers sliced for position ids, counters)."""
    owners = {p.name.rsplit(".", 1)[0]: p.op for p in params.values()}
    for name, value in state.items():
        if name not in params:
            params[name] = ParamInfo(name=name, shape=list(value.shape),
                                     dtype=wire_name(value.dtype),
                                     op=owners.get(name.rsplit(".", 1)[0]),
                                     role=state_role(name, value), trainable=name in trainable)
