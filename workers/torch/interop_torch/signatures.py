"""Function signatures for torch models, which declare none of their own.

Sources, best first: the worker config; an exported program's graph (placeholder
``val`` metadata gives dtypes and shapes, symbolic dims become None); the Python
signature of the method (names only: any dtype, any shape).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from interop_runtime import FunctionSpec, TensorSpec

from .convert import wire_name

DEFAULT_OUTPUT = "y"
_CONV_PREFIXES = ("aten.conv2d", "aten.convolution", "aten._convolution", "aten.conv_transpose2d")


def output_names(count: int) -> list[str]:
    """Default output names: ``y`` for one output, ``y0, y1, ...`` for several."""
    return [DEFAULT_OUTPUT] if count == 1 else [f"{DEFAULT_OUTPUT}{i}" for i in range(count)]


def from_config(entry: Mapping[str, Any], key: str) -> list[TensorSpec] | None:
    items = entry.get(key)
    return None if items is None else [TensorSpec.model_validate(i) for i in items]


def _spec_of(name: str, val: Any, layout: str | None = None) -> TensorSpec:
    if not isinstance(val, torch.Tensor):  # a non-tensor user input (int, float): any
        return TensorSpec(name=name)
    shape: list[int | None] = [d if isinstance(d, int) else None for d in val.shape]  # SymInt
    return TensorSpec(name=name, dtype=wire_name(val.dtype), shape=shape, layout=layout)


def from_exported(program: torch.export.ExportedProgram) -> tuple[list[TensorSpec],
                                                                  list[TensorSpec]]:
    """Inputs and outputs of an exported program, from its graph signature."""
    sig = program.graph_signature
    nodes = {n.name: n for n in program.graph.nodes}
    inputs = []
    for name in sig.user_inputs:
        node = nodes[name]
        val = node.meta.get("val")
        # a 4-D input fed straight into a 2-D convolution is NCHW, torch's only conv layout
        conv = any(str(u.target).startswith(_CONV_PREFIXES) for u in node.users)
        layout = "NCHW" if conv and isinstance(val, torch.Tensor) and val.dim() == 4 else None
        inputs.append(_spec_of(name, val, layout))
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    by_name = {getattr(a, "name", None): a for a in out_node.args[0]}
    vals = [getattr(by_name.get(n), "meta", {}).get("val") for n in sig.user_outputs]
    spec = program.call_spec.out_spec
    names = output_names(len(vals))
    if spec is not None and spec.type is dict and len(spec.context) == len(vals):
        names = [str(k) for k in spec.context]  # a dict return keeps its keys as names
    return inputs, [_spec_of(n, v) for n, v in zip(names, vals, strict=True)]


def from_python(method: Callable[..., Any]) -> list[TensorSpec]:
    """Input names from a method's required parameters; dtype and shape unknown."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [TensorSpec(name=p.name) for p in params
            if p.kind in kinds and p.default is inspect.Parameter.empty]


def first_conv2d_channels(model: torch.nn.Module) -> int | None:
    """in_channels of the first leaf module if it is a Conv2d (eager or TorchScript), else None.

    Registration order is only a hint of execution order, so the caller also asks
    that the declared input's channel dim agrees before calling the input NCHW.
    """
    for module in model.modules():
        if not list(module.children()):
            kind = getattr(module, "original_name", type(module).__name__)  # ScriptModules
            channels: Any = module.in_channels if kind == "Conv2d" else None
            return None if channels is None else int(channels)
    return None


def build(name: str, method: Callable[..., Any], entry: Mapping[str, Any], *,
          model: torch.nn.Module, exported: torch.export.ExportedProgram | None) -> FunctionSpec:
    """The FunctionSpec of one function: config first, then the program, then Python."""
    if exported is not None and name == "forward":
        inputs, outputs = from_exported(exported)
    elif name == "forward" and isinstance(getattr(model, "interop_spec", None), FunctionSpec):
        inputs, outputs = list(model.interop_spec.inputs), list(model.interop_spec.outputs)
    else:
        inputs, outputs = from_python(method), [TensorSpec(name=DEFAULT_OUTPUT)]
    declared_in, declared_out = from_config(entry, "inputs"), from_config(entry, "outputs")
    inputs = inputs if declared_in is None else declared_in
    outputs = outputs if declared_out is None else declared_out
    first = inputs[0] if inputs else None
    if (name == "forward" and first is not None and first.layout is None
            and first.shape is not None and len(first.shape) == 4):
        channels = first_conv2d_channels(model)
        if channels is not None and first.shape[1] in (None, channels):
            inputs[0] = first.model_copy(update={"layout": "NCHW"})
    doc = method.__doc__ if inspect.ismethod(method) else None
    return FunctionSpec(name=name, inputs=inputs, outputs=outputs, doc=doc)
