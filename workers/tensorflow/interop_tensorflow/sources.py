"""Where a model comes from (a factory, a .keras file, a SavedModel) and the functions
it offers, each as positional tensors in and out in the order of its FunctionSpec.

Names on the wire are the model's own (Keras Input and output layer names, or a
SavedModel signature's argument and output keys) unless the config renames
them, by position (``inputs: [{name: x}]``) or by name (``inputs: {x: input_layer}``);
a run function maps wire positions back to what the model expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interop_runtime import FunctionSpec, TensorSpec, UnknownTargetError, import_callable

from .runtime import import_keras
from .specs import apply_overrides, image_layout, tensor_spec, unique_names

SOURCES = ("factory", "keras_file", "saved_model")
FORWARD = "forward"

Run = Callable[..., Sequence[Any]]  # tensors in spec.inputs order -> spec.outputs order


@dataclass
class Function:
    spec: FunctionSpec
    run: Run


@dataclass
class Loaded:
    functions: dict[str, Function]
    variables: dict[str, Any]  # parameter name -> tf.Variable or keras.Variable
    owner: Any = field(default=None, repr=False)  # keeps a SavedModel's variables alive


def load(config: Mapping[str, Any], tf: Any) -> Loaded:
    """Build or read the configured model; call inside the worker's tf.device scope."""
    given = [s for s in SOURCES if config.get(s)]
    if len(given) != 1:
        raise ValueError(f"the tensorflow plugin needs exactly one of {', '.join(SOURCES)} "
                         f"in its config (got {', '.join(given) or 'none'})")
    misplaced = [k for k, source in (("kwargs", "factory"), ("signature", "saved_model"))
                 if k in config and given[0] != source]
    if misplaced:
        raise ValueError(f"config {', '.join(misplaced)} does not apply to a {given[0]} source")
    if given[0] == "saved_model":
        return saved_model(Path(config["saved_model"]), config.get("signature", "serving_default"),
                           config, tf)
    keras = import_keras()
    if given[0] == "factory":
        factory = import_callable(config["factory"], what="factory")
        model = factory(**(config.get("kwargs") or {}))
    else:
        # safe_mode refuses Lambda layers' pickled code; compile=False skips the optimizer
        model = keras.saving.load_model(config["keras_file"], compile=False, safe_mode=True)
    return keras_model(model, config, tf, keras)


# --- Keras ------------------------------------------------------------------------------

def keras_model(model: Any, config: Mapping[str, Any], tf: Any, keras: Any) -> Loaded:
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    ins, outs = _keras_specs(model, config)
    pack = _input_packer(model, len(ins), keras)

    def forward(*tensors: Any) -> tuple[Any, ...]:
        return tuple(keras.tree.flatten(model(pack(tensors), training=False)))

    run: Run = forward
    if config.get("tf_function", True):
        # a full signature: one trace serves every batch size. Without one (any dtype or
        # rank allowed), traces follow the inputs seen; Keras cannot build on unknown ranks.
        # A model that cannot be traced at all sets tf_function: false.
        known = all(s.dtype and s.shape is not None for s in ins)
        signature = [tf.TensorSpec(s.shape, s.dtype) for s in ins] if known else None
        run = tf.function(forward, input_signature=signature, reduce_retracing=True)
    spec = FunctionSpec(name=FORWARD, inputs=ins, outputs=outs,
                        doc=f"Keras model {model.name!r} called with training=False")
    names = unique_names(v.path for v in model.weights)
    return Loaded({FORWARD: Function(spec, run)}, dict(zip(names, model.weights)), owner=model)


def _input_packer(model: Any, count: int, keras: Any) -> Callable[[Sequence[Any]], Any]:
    """Inputs in the structure the functional model was built with (a tensor, a list,
    a dict), which Keras takes without a structure warning; else a tensor or a list."""
    try:
        structure = model.input
    except (AttributeError, ValueError):  # subclassed, or a Sequential never called
        return (lambda tensors: tensors[0]) if count == 1 else list
    return lambda tensors: keras.tree.pack_sequence_as(structure, list(tensors))


def layer_name(tensor: Any) -> str:
    """The name of the Keras layer that made a symbolic tensor (an Input layer's own name
    for a model input). KerasTensor names (``keras_tensor_3``) come from a per-process
    counter and change between loads; layer names are saved with the model."""
    history = getattr(tensor, "_keras_history", None)
    return str(getattr(getattr(history, "operation", None), "name", None) or tensor.name)


def _keras_specs(model: Any, config: Mapping[str, Any]
                 ) -> tuple[list[TensorSpec], list[TensorSpec]]:
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):  # subclassed or unbuilt: no symbolic tensors
        if not (config.get("inputs") and config.get("outputs")):
            raise ValueError(f"Keras model {model.name!r} has no symbolic inputs (subclassed or "
                             "not built); give `inputs` and `outputs` in the config") from None
        if isinstance(config["inputs"], Mapping) or isinstance(config["outputs"], Mapping):
            raise ValueError(f"Keras model {model.name!r} has no names to map (subclassed or "
                             "not built): give `inputs` and `outputs` as lists of specs") from None
        return ([TensorSpec.model_validate(s) for s in config["inputs"]],
                [TensorSpec.model_validate(s) for s in config["outputs"]])
    layout = image_layout(model.layers)
    # names: the Input layers' and the output layers' own (model.output_names where Keras
    # keeps them), so that a saved model keeps its wire names in every process
    out_names = getattr(model, "output_names", None) or [layer_name(t) for t in outputs]
    rows = _embedding_rows(model)
    ins = [tensor_spec(n, t.dtype, t.shape, layout=layout, what=f"input {n!r}")
           for n, t in zip(unique_names(layer_name(t) for t in inputs), inputs)]
    ins = [s.model_copy(update={"range": [0, rows[layer_name(t)] - 1]})
           if layer_name(t) in rows else s for s, t in zip(ins, inputs)]
    outs = [tensor_spec(n, t.dtype, t.shape, layout=layout, what=f"output {n!r}")
            for n, t in zip(unique_names(out_names), outputs)]
    return (_overridden(ins, config.get("inputs"), what="inputs"),
            _overridden(outs, config.get("outputs"), what="outputs"))


def _embedding_rows(model: Any) -> dict[str, int]:
    """Input layer name -> the rows of the Embedding layers it feeds directly (the
    smallest, if several): token ids must stay below it (TensorSpec.range)."""
    keras = import_keras()
    rows: dict[str, int] = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Embedding):
            continue
        try:
            source = layer_name(layer.input)
        except (AttributeError, ValueError):  # shared between calls: no single input
            continue
        rows[source] = min(rows.get(source, layer.input_dim), int(layer.input_dim))
    return rows


def _overridden(derived: list[TensorSpec], overrides: Any, *, what: str) -> list[TensorSpec]:
    """Config ``inputs``/``outputs``: a list of overrides by position (specs.apply_overrides),
    or a mapping ``{wire name: Keras name}`` that renames only the tensors it names."""
    if not isinstance(overrides, Mapping):
        return apply_overrides(derived, overrides, what=what)
    known = {s.name for s in derived}
    unknown = sorted(str(v) for v in overrides.values() if v not in known)
    if unknown:
        raise ValueError(f"config {what} maps {', '.join(unknown)}, which the model does not "
                         f"have (it has: {', '.join(sorted(known))})")
    wire = {str(v): str(k) for k, v in overrides.items()}
    renamed = [TensorSpec.model_validate({**s.model_dump(), "name": wire.get(s.name, s.name)})
               for s in derived]
    if len({s.name for s in renamed}) != len(renamed):
        raise ValueError(f"config {what} gives two tensors the same name")
    return renamed


# --- SavedModel ---------------------------------------------------------------------------

def saved_model(path: Path, signature: str, config: Mapping[str, Any], tf: Any) -> Loaded:
    if not path.is_dir():
        raise FileNotFoundError(f"no SavedModel directory at {path}")
    obj = tf.saved_model.load(str(path))
    if signature not in obj.signatures:
        raise UnknownTargetError(f"SavedModel {path} has no signature {signature!r} "
                                 f"(it has: {', '.join(obj.signatures) or 'none'})",
                                 field="signature")
    fn = obj.signatures[signature]
    _, kw_specs = fn.structured_input_signature  # signatures take keyword arguments only
    out_specs = fn.structured_outputs
    in_names, out_names = sorted(kw_specs), sorted(out_specs)  # dict order is not stable
    ins = [tensor_spec(n, kw_specs[n].dtype, kw_specs[n].shape, layout=None, what=f"input {n!r}")
           for n in in_names]
    outs = [tensor_spec(n, out_specs[n].dtype, out_specs[n].shape, layout=None,
                        what=f"output {n!r}") for n in out_names]
    ins = _overridden(ins, config.get("inputs"), what="inputs")
    outs = _overridden(outs, config.get("outputs"), what="outputs")

    def run(*tensors: Any) -> tuple[Any, ...]:
        result = fn(**dict(zip(in_names, tensors)))
        return tuple(result[n] for n in out_names)

    doc = f"SavedModel {path.name} signature {signature!r}"
    # the signature under its own name, and as `forward` so graphs need not care
    # whether a model came from Keras or from a SavedModel
    functions = {name: Function(FunctionSpec(name=name, inputs=ins, outputs=outs, doc=doc), run)
                 for name in dict.fromkeys([signature, FORWARD])}
    variables = list(fn.variables)
    names = unique_names(v.name.removesuffix(":0") for v in variables)
    return Loaded(functions, dict(zip(names, variables)), owner=obj)
