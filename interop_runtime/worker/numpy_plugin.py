"""The built-in NumPy / Python-callable plugin.

Config::

    functions:
      scale:
        callable: interop_runtime.worker.numpy_ops:scale   # module:attribute
        args: {factor: 2.0}          # fixed keyword arguments (a node's args override)
        inputs:  [{name: x, dtype: float32, shape: [null, 4]}]   # optional overrides
        outputs: [{name: y, dtype: float32, shape: [null, 4]}]
    params:                          # optional named parameter tensors
      w: {shape: [4, 4], dtype: float32, seed: 0}

A callable receives its inputs as keyword arguments (plus args, plus ``params``
if it declares that parameter) and returns an array or a dict of named arrays.
Its signature comes from ``@numpy_function`` or, failing that, from its Python
parameters with any dtype and shape. Callables are named by the worker's own
config file, which the operator controls; nothing from the wire is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from interop_runtime.wire.dtypes import to_numpy_dtype
from interop_runtime.wire.errors import UnknownFunctionError, UnknownTargetError
from interop_runtime.wire.messages import FunctionSpec, TensorSpec
from interop_runtime.worker.plugin import WorkerPlugin, import_callable

SIGNATURE_ATTR = "__interop_signature__"


Fn = Callable[..., Any]


def numpy_function(inputs: Sequence[TensorSpec | dict[str, Any]],
                   outputs: Sequence[TensorSpec | dict[str, Any]]) -> Callable[[Fn], Fn]:
    """Declare a callable's tensor signature for the NumPy plugin."""
    def wrap(fn: Fn) -> Fn:
        setattr(fn, SIGNATURE_ATTR, ([TensorSpec.model_validate(i) for i in inputs],
                                     [TensorSpec.model_validate(o) for o in outputs]))
        return fn
    return wrap


@dataclass
class _Function:
    fn: Callable[..., Any]
    spec: FunctionSpec
    args: dict[str, Any]
    wants_params: bool


class NumpyPlugin(WorkerPlugin):
    install_hint = "pip install numpy"

    def __init__(self) -> None:
        self._functions: dict[str, _Function] = {}
        self._params: dict[str, np.ndarray] = {}

    def load(self, config: Mapping[str, Any], device: str) -> None:
        if device != "cpu":
            raise ValueError(f"the numpy plugin runs on the CPU only, not {device!r}")
        for name, entry in (config.get("params") or {}).items():
            rng = np.random.default_rng(entry.get("seed", 0))
            dtype = to_numpy_dtype(entry.get("dtype", "float32"))
            self._params[name] = rng.standard_normal(entry["shape"]).astype(dtype)
        for name, entry in (config.get("functions") or {}).items():
            if isinstance(entry, str):
                entry = {"callable": entry}
            fn = import_callable(entry["callable"])
            declared = getattr(fn, SIGNATURE_ATTR, None)
            fixed = dict(entry.get("args") or {})
            params = inspect.signature(fn).parameters
            if declared:
                ins, outs = declared
            else:
                ins = [TensorSpec(name=p) for p in params if p not in fixed and p != "params"]
                outs = [TensorSpec(name="y")]
            if "inputs" in entry:
                ins = [TensorSpec.model_validate(i) for i in entry["inputs"]]
            if "outputs" in entry:
                outs = [TensorSpec.model_validate(o) for o in entry["outputs"]]
            self._functions[name] = _Function(
                fn=fn, spec=FunctionSpec(name=name, inputs=ins, outputs=outs, doc=fn.__doc__),
                args=fixed, wants_params="params" in params)

    def describe(self) -> list[FunctionSpec]:
        return [f.spec for f in self._functions.values()]

    def call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any]
             ) -> Mapping[str, Any]:
        entry = self._functions.get(function)
        if entry is None:
            raise UnknownFunctionError(f"no function {function!r}", field="function")
        kwargs: dict[str, Any] = {**entry.args, **args, **inputs}
        if entry.wants_params:
            kwargs["params"] = self._params
        result = entry.fn(**kwargs)
        if isinstance(result, Mapping):
            return result
        return {entry.spec.outputs[0].name if entry.spec.outputs else "y": result}

    def get_params(self, names: Sequence[str] | None) -> dict[str, np.ndarray]:
        wanted = list(self._params) if names is None else list(names)
        missing = [n for n in wanted if n not in self._params]
        if missing:
            raise UnknownTargetError(f"no parameters named {', '.join(missing)}", field="names")
        return {n: self._params[n] for n in wanted}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        for name, value in params.items():
            old = self._params.get(name)
            if old is not None and old.shape != value.shape:
                raise UnknownTargetError(f"parameter {name!r} has shape {old.shape}, got {value.shape}",
                                         field=name)
        for name, value in params.items():
            self._params[name] = np.array(value)  # own a writable copy, not the frame
