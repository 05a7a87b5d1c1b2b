"""Where a model comes from (a factory, a .keras file, a SavedModel) and the functions
it offers, each as positional tensors in and out in the order of its FunctionSpec.

Names on the wire are the model's own (Keras Input and output layer names, or a
SavedModel signature's argument and output keys) unless the config renames
them; a run function maps wire positions back to what the model expects.
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


def _keras_specs(model: Any, config: Mapping[str, Any]
                 ) -> tuple[list[TensorSpec], list[TensorSpec]]:
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):  # subclassed or unbuilt: no symbolic tensors
        if not (config.get("inputs") and config.get("outputs")):
            raise ValueError(f"Keras model {model.name!r} has no symbolic inputs (subclassed or "
                             "not built); give `inputs` and `outputs` in the config") from None
        return ([TensorSpec.model_validate(s) for s in config["inputs"]],
                [TensorSpec.model_validate(s) for s in config["outputs"]])
    layout = image_layout(model.layers)
    out_names = getattr(model, "output_names", None) or (
        [model.layers[-1].name] if len(outputs) == 1 and model.layers
        else [f"output_{i}" for i in range(len(outputs))])
    ins = [tensor_spec(t.name, t.dtype, t.shape, layout=layout, what=f"input {t.name!r}")
           for t in inputs]
    outs = [tensor_spec(n, t.dtype, t.shape, layout=layout, what=f"output {n!r}")
            for n, t in zip(unique_names(out_names), outputs)]
    return (apply_overrides(ins, config.get("inputs"), what="inputs"),
            apply_overrides(outs, config.get("outputs"), what="outputs"))


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
    ins = apply_overrides(ins, config.get("inputs"), what="inputs")
    outs = apply_overrides(outs, config.get("outputs"), what="outputs")

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
