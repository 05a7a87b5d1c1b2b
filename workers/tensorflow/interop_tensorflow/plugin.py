"""The TensorFlow / Keras worker plugin.

Config (exactly one source)::

    factory: "interop_tensorflow.models:tiny_mlp"   # module:function returning a keras.Model
    kwargs: {seed: 0}                                # its keyword arguments
    keras_file: model.keras                         # or: keras.saving.load_model, safe_mode
    saved_model: export_dir                         # or: tf.saved_model.load ...
    signature: serving_default                      #     ... and this signature
    inputs:  [{name: image, layout: NHWC}]          # optional overrides, by position;
    outputs: [{name: features}]                     # fields left out keep the model's
    # or by name, {wire name: Keras name}:  inputs: {x: input_layer}, outputs: {y: dense_1}
    tf_function: true                               # trace Keras calls once (false: eager)
    memory_limit_mb: 4096                           # GPU only: cap instead of memory growth
    export: true                                    # also offer export_onnx (migrate.py)

Functions: ``forward`` (Keras models, called with training=False; SavedModels too),
and for a SavedModel also the signature under its own name. Parameters are the
model's variables by path (``dense/kernel``).

Tensor names: a Keras model's inputs are named after its Input layers and its outputs
after its output layers (``model.output_names``), names saved with the model and so the
same in every process and load; never the KerasTensor names (``keras_tensor_3``), which
a per-process counter makes. Training functions always take ``x`` and return ``logits``
(the training contract, interop_runtime.ops.training), whatever the forward's names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from interop_runtime import (
    DTypeMismatchError,
    FunctionSpec,
    ShapeMismatchError,
    UnknownFunctionError,
    UnknownTargetError,
    WorkerPlugin,
    parse_device,
    trainspec,
)

from . import runtime, sources

KNOWN_KEYS = frozenset({*sources.SOURCES, "kwargs", "signature", "inputs", "outputs",
                        "tf_function", "memory_limit_mb", "training", "export"})


class TensorFlowPlugin(WorkerPlugin):
    # no square brackets: the worker CLI prints this through rich, which eats [tags]
    install_hint = ("pip install tensorflow-cpu  (for GPUs: the `tensorflow` package with "
                    "its `and-cuda` extra)")

    def __init__(self) -> None:
        self._tf: Any = None
        self._device = "/CPU:0"
        self._model: sources.Loaded | None = None
        self._trainer: Any = None  # training.KerasTrainer when the config has `training:`

    def load(self, config: Mapping[str, Any], device: str) -> None:
        unknown = sorted(set(config) - KNOWN_KEYS)
        if unknown:
            raise ValueError(f"unknown tensorflow plugin config keys: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(KNOWN_KEYS))})")
        dev = parse_device(device)  # a bad name fails before the slow import
        tf = self._tf = runtime.import_tensorflow()  # lazily: ImportError -> install hint
        self._device = runtime.setup(tf, dev, config.get("memory_limit_mb"))
        with tf.device(self._device):
            self._model = sources.load(config, tf)
        from .training import trainer_from_config

        self._trainer = trainer_from_config(config, tf, self._model, self._device)
        if config.get("export"):  # export_onnx: the model as ONNX bytes (see migrate.py)
            from . import migrate

            migrate.offer(self._model, tf)

    def _loaded(self) -> sources.Loaded:
        if self._model is None:
            raise UnknownTargetError("the tensorflow plugin has no model loaded")
        return self._model

    def describe(self) -> list[FunctionSpec]:
        return ([f.spec for f in self._loaded().functions.values()]
                + (self._trainer.describe() if self._trainer else []))

    def call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any]
             ) -> Mapping[str, Any]:
        if self._trainer is not None and function in self._trainer.specs:
            return self._trainer.call(function, inputs, args)  # training=True, with gradients
        if function == "export_onnx" and function in self._loaded().functions:
            from .migrate import export_onnx

            return export_onnx(self._loaded(), self._tf, args)  # takes args, not tensors
        fn = self._loaded().functions.get(function)
        if fn is None:
            raise UnknownFunctionError(f"no function {function!r}", field="function")
        tf = self._tf
        with tf.device(self._device):
            # convert_to_tensor copies once into TF's own (aligned) buffer; there is
            # no zero-copy path for numpy input in TF 2.x
            tensors = [tf.convert_to_tensor(inputs[s.name]) for s in fn.spec.inputs]
            results = fn.run(*tensors)
        # np.asarray views a CPU tensor's buffer (Tensor.numpy() would copy it);
        # a GPU tensor is copied to the host here, once
        return {s.name: np.asarray(r) for s, r in zip(fn.spec.outputs, results)}

    def output_layouts(self, function: str) -> Mapping[str, str]:
        fn = self._loaded().functions.get(function)
        return {s.name: s.layout for s in fn.spec.outputs if s.layout} if fn else {}

    # --- parameters -------------------------------------------------------------------

    def get_params(self, names: Sequence[str] | None) -> dict[str, np.ndarray]:
        variables = self._loaded().variables
        wanted = list(variables) if names is None else list(names)
        missing = [n for n in wanted if n not in variables]
        if missing:
            raise UnknownTargetError(f"no parameters named {', '.join(missing)}", field="names")
        tf = self._tf
        # a copy, not a view: a later set_params must not change what was read
        # (np.asarray then copy: np.array on a tf.Tensor warns under NumPy 2)
        return {n: np.asarray(tf.convert_to_tensor(variables[n])).copy() for n in wanted}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        variables = self._loaded().variables
        checked = {name: _checked(name, variables.get(name), value, self._tf)
                   for name, value in params.items()}
        with self._tf.device(self._device):  # all checked first: no half-applied writes
            for name, value in checked.items():
                variables[name].assign(value)

    def mutates_params(self, function: str) -> bool:
        return self._trainer is not None and function in (trainspec.TRAIN_STEP,
                                                               trainspec.DISTILL_STEP)

    def model_graph(self) -> dict[str, Any]:
        from .modelgraph import build  # the model as a neutral graph (ops.compat.modelgraph)

        return build(self._loaded()).to_dict()

    def device_memory(self) -> int | None:
        """Bytes TensorFlow holds on this worker's GPU (the worker's metrics hook); None on
        the CPU."""
        if "GPU" not in str(self._device).upper():
            return None
        info = self._tf.config.experimental.get_memory_info(str(self._device).lstrip("/"))
        return int(info["current"])

    def close(self) -> None:
        self._model = self._trainer = None


def _checked(name: str, variable: Any, value: Any, tf: Any) -> np.ndarray:
    """``value`` as the variable's dtype, or a typed error naming the variable."""
    if variable is None:
        raise UnknownTargetError(f"no parameter named {name!r}", field=name)
    value = np.asarray(value)
    shape = tuple(variable.shape)
    if value.shape != shape:
        raise ShapeMismatchError(f"parameter {name!r} has shape {shape}, got {value.shape}",
                                 field=name)
    dtype = np.dtype(tf.as_dtype(variable.dtype).as_numpy_dtype)
    if value.dtype != dtype and not np.can_cast(value.dtype, dtype, "same_kind"):
        raise DTypeMismatchError(f"parameter {name!r} is {dtype}, got {value.dtype}", field=name)
    return value.astype(dtype, copy=False)
