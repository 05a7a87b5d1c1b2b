"""The PyTorch worker plugin: one nn.Module, its ``forward`` and chosen public methods.

Config (exactly one of factory / torchscript / exported / onnx)::

    factory: mypkg.models:build     # module:function returning an nn.Module
    kwargs: {hidden: 64}            # the factory's keyword arguments
    seed: 0                         # torch.manual_seed before the factory (optional)
    torchscript: model.ts           # a torch.jit.save archive
    exported: model.pt2             # a torch.export.save archive
    onnx: model.onnx                # through onnx2torch (pip install --no-deps; onnx_import.py)
    state: weights.safetensors      # optional load_state_dict after any of the above
    strict: true                    # load_state_dict strictness
    inputs:  [{name: x, dtype: float32, shape: [null, 4], layout: null}]   # forward's
    outputs: [{name: y, dtype: float32, shape: [null, 3]}]
    methods: [encode]               # more public methods to offer, or a mapping
                                    # {encode: {inputs: [...], outputs: [...]}}
    memory_fraction: 0.5            # CUDA only: this worker's share of the GPU
    threads: 4                      # torch.set_num_threads, for several CPU workers
    copy_inputs: false              # copy input frames for models that write into inputs
    export: true                    # also offer export_onnx (migrate.py)

Inputs are passed positionally in the declared order (node args as keywords);
a tuple or list result maps onto the declared output names in order, a dict
result keeps its keys, a single tensor takes the first output name. Every
function runs under torch.inference_mode(). On the CPU the model sees the input
frames' memory, not a copy; a model that writes into an input is stopped with an
error that names ``copy_inputs``. A CUDA device that is not there fails ``load``
with DeviceUnavailable; there is no CPU fallback.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from interop_runtime import (
    FunctionSpec,
    ShapeMismatchError,
    UnknownFunctionError,
    UnknownTargetError,
    WorkerPlugin,
    trainspec,
)

if TYPE_CHECKING:
    import torch


class TorchPlugin(WorkerPlugin):
    install_hint = "pip install torch==2.13.0"

    def __init__(self) -> None:
        self._model: torch.nn.Module | None = None
        self._device: torch.device | None = None
        self._functions: dict[str, tuple[Callable[..., Any], FunctionSpec]] = {}
        self._copy_inputs = False
        self._trainer: Any = None  # training.TorchTrainer when the config has `training:`

    # --- loading -------------------------------------------------------------------------

    def load(self, config: Mapping[str, Any], device: str) -> None:
        import torch  # here, not at module level: a missing torch is an ImportError of load()

        from . import loading, signatures

        self._device = loading.torch_device(device, config.get("memory_fraction"))
        if config.get("threads"):
            torch.set_num_threads(int(config["threads"]))
        loaded = loading.load_model(config, self._device)
        self._model = loaded.model
        self._copy_inputs = bool(config.get("copy_inputs", False))
        for name, entry in _function_entries(config).items():
            method = self._method(name, exported=loaded.exported is not None)
            spec = signatures.build(name, method, entry, model=loaded.model,
                                    exported=loaded.exported)
            # forward goes through __call__ so that module hooks run as in plain torch
            self._functions[name] = (loaded.model if name == "forward" else method, spec)
        if config.get("export"):  # export_onnx: the model as ONNX bytes (see migrate.py)
            from functools import partial

            from . import migrate

            self._functions[migrate.FUNCTION] = (partial(
                migrate.export_onnx, loaded.model, self._functions["forward"][1], self._device),
                migrate.SPEC)
        from .training import trainer_from_config

        self._trainer = trainer_from_config(config, loaded.model, loaded.exported, self._device,
                                            self._functions["forward"][1], self._functions)

    def _method(self, name: str, *, exported: bool) -> Callable[..., Any]:
        import torch

        if name.startswith("_"):
            raise ValueError(f"method {name!r} is private; only public methods can be offered")
        if name != "forward" and hasattr(torch.nn.Module, name):
            raise ValueError(f"{name!r} is torch.nn.Module's own method, not the model's")
        if exported and name != "forward":
            raise ValueError(f"an exported program has only forward, not {name!r}")
        method = getattr(self._model, name, None)
        if not (inspect.ismethod(method) or isinstance(method, torch.ScriptMethod)):
            raise ValueError(f"the model ({type(self._model).__name__}) has no method {name!r}"
                             + (" (TorchScript needs @torch.jit.export on it)"
                                if isinstance(self._model, torch.jit.ScriptModule) else ""))
        return method

    def describe(self) -> list[FunctionSpec]:
        return ([spec for _, spec in self._functions.values()]
                + (self._trainer.describe() if self._trainer else []))

    def output_layouts(self, function: str) -> Mapping[str, str]:
        entry = self._functions.get(function)
        return {} if entry is None else {o.name: o.layout for o in entry[1].outputs if o.layout}

    # --- calling ---------------------------------------------------------------------------

    def call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any]
             ) -> Mapping[str, Any]:
        import torch

        from .convert import to_tensor

        if self._trainer is not None and function in self._trainer.specs:
            return self._trainer.call(function, inputs, args)  # with gradients, not inference
        entry = self._functions.get(function)
        if entry is None:
            raise UnknownFunctionError(f"no function {function!r}", field="function")
        fn, spec = entry
        declared = [s.name for s in spec.inputs]
        missing = [n for n in declared if n not in inputs]
        if missing:
            raise ValueError(f"{function}: missing input(s) {', '.join(missing)}")
        assert self._device is not None
        tensors = {n: to_tensor(a, self._device, copy=self._copy_inputs) for n, a in inputs.items()}
        # inputs share the frames' memory on the CPU; Tensor._version counts in-place writes
        shared = ({} if self._copy_inputs or self._device.type != "cpu"
                  else {n: t._version for n, t in tensors.items()})
        extra = {n: t for n, t in tensors.items() if n not in declared}  # undeclared: keywords
        with torch.inference_mode():
            result = fn(*(tensors[n] for n in declared), **extra, **args)
        written = [n for n, v in shared.items() if tensors[n]._version != v]
        if written:
            raise RuntimeError(
                f"{function} wrote into its input(s) {', '.join(written)} in place, but inputs "
                "share memory with the received message; set copy_inputs: true in the worker "
                "config for this model")
        return _name_outputs(function, spec, result)

    # --- parameters ------------------------------------------------------------------------

    def get_params(self, names: Sequence[str] | None) -> dict[str, np.ndarray]:
        from .convert import to_numpy

        state = self._state()
        wanted = list(state) if names is None else list(names)
        missing = [n for n in wanted if n not in state]
        if missing:
            raise UnknownTargetError(f"no parameters named {', '.join(missing)}", field="names")
        # a copy: the reply is sent asynchronously and must not see a later set_params
        return {n: to_numpy(state[n] if state[n].device.type != "cpu" else state[n].clone())
                for n in wanted}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        import torch

        from .convert import to_tensor

        state = self._state()
        for name, value in params.items():  # check everything before writing anything
            if name not in state:
                raise UnknownTargetError(f"the model has no parameter {name!r}", field=name)
            if tuple(state[name].shape) != tuple(value.shape):
                raise ShapeMismatchError(f"parameter {name!r} has shape {tuple(state[name].shape)}"
                                         f", got {tuple(value.shape)}", field=name)
        assert self._device is not None
        with torch.no_grad():
            for name, value in params.items():
                # copy_ casts dtype and device; state_dict tensors share the parameters' storage
                state[name].copy_(to_tensor(value, self._device, copy=True))

    def mutates_params(self, function: str) -> bool:
        return self._trainer is not None and function in (trainspec.TRAIN_STEP,
                                                               trainspec.DISTILL_STEP)

    def model_graph(self) -> dict[str, Any]:
        from .modelgraph import build  # the model as a neutral graph (ops.compat.modelgraph)

        if self._model is None:
            raise UnknownTargetError("no model is loaded")
        forward = self._functions.get("forward")
        return build(self._model, forward[1] if forward else None).to_dict()

    def _state(self) -> dict[str, torch.Tensor]:
        if self._model is None:
            raise UnknownTargetError("no model is loaded", field="names")
        return dict(self._model.state_dict())

    def device_memory(self) -> int | None:
        """Bytes of CUDA memory this process's tensors hold (the worker's metrics hook);
        None on the CPU."""
        if self._device is None or self._device.type != "cuda":
            return None
        import torch

        return int(torch.cuda.memory_allocated(self._device))

    def close(self) -> None:
        on_gpu = self._device is not None and self._device.type == "cuda"
        self._model, self._functions, self._trainer = None, {}, None
        if on_gpu:
            import torch

            torch.cuda.empty_cache()  # give the memory back to the workers sharing this GPU


def _function_entries(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """forward plus the configured methods, each with its optional inputs/outputs."""
    methods = config.get("methods") or []
    if isinstance(methods, Mapping):
        entries = {str(k): dict(v or {}) for k, v in methods.items()}
    elif isinstance(methods, list):
        entries = {str(k): {} for k in methods}
    else:
        raise ValueError("methods must be a list of names or a mapping name -> {inputs, outputs}")
    forward = {k: config[k] for k in ("inputs", "outputs") if k in config}
    return {"forward": {**forward, **entries.pop("forward", {})}, **entries}


def _name_outputs(function: str, spec: FunctionSpec, result: Any) -> dict[str, np.ndarray]:
    from .convert import to_numpy

    if result is None:
        return {}
    if isinstance(result, Mapping):
        return {str(k): to_numpy(v) for k, v in result.items()}
    names = [o.name for o in spec.outputs] or ["y"]
    if isinstance(result, (tuple, list)):
        if len(result) != len(names):
            raise ValueError(f"{function} returned {len(result)} outputs but {len(names)} "
                             f"output name(s) are declared ({', '.join(names)}); declare "
                             "outputs: [...] in the worker config")
        return {n: to_numpy(v) for n, v in zip(names, result, strict=True)}
    return {names[0]: to_numpy(result)}
