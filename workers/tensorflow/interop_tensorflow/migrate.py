"""``export_onnx``: the worker's model as ONNX bytes, exported where the model lives.

Offered when the worker config says ``export: true``. Arguments (all optional):
``opset`` (default 17), ``batch`` (accepted for symmetry with the torch plugin;
tf2onnx traces with the declared signature, so dynamic dims stay dynamic without an
example). Outputs: ``onnx`` (uint8, the serialized ModelProto) and ``info`` (uint8,
UTF-8 JSON: converter used, opset, names, why a fallback happened).

Converters, first that works: tf2onnx ``from_keras`` (Keras models), tf2onnx
``from_function`` over the worker's own forward (SavedModels, or when from_keras
fails), Keras' ``model.export(format="onnx")``. The ONNX graph's inputs and outputs
are renamed to the function's declared names and its leading dynamic dim to ``batch``,
so the ONNX Runtime worker takes and returns the same names as this one.

Two fixes make the file loadable beyond ONNX Runtime (onnx2torch, see
interop_torch.onnx_rewrites): Keras RNN layers (GRU, LSTM, SimpleRNN) are exported from
a copy with ``unroll=True`` when the sequence length is static, because tf2onnx's GRU
rewriter matches Keras 2 graphs only and writes Keras 3's as an ONNX Loop; and the
``Erfc`` tf2onnx leaves in for exact GELU (it is no ONNX op) becomes ``1 - Erf``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from interop_runtime import FunctionSpec, exportspec

from .sources import FORWARD, Loaded

FUNCTION, SPEC = exportspec.FUNCTION, exportspec.SPEC
DEFAULT_OPSET = 17

log = logging.getLogger("interop.tensorflow.migrate")


def export_onnx(loaded: Loaded, tf: Any, args: Any) -> dict[str, np.ndarray]:
    opset = exportspec.parse_args(args)[0] or DEFAULT_OPSET  # a batch is not needed here
    forward = loaded.functions[FORWARD]
    for s in forward.spec.inputs:
        if s.shape is None or s.dtype is None:
            raise ValueError(f"input {s.name!r} declares no shape or dtype; give `inputs` "
                             "in the worker config to export it")
    signature = [tf.TensorSpec(s.shape, s.dtype, name=s.name) for s in forward.spec.inputs]
    info: dict[str, Any] = {"framework": "tensorflow", "tensorflow": tf.__version__,
                            "inputs": [s.name for s in forward.spec.inputs],
                            "outputs": [s.name for s in forward.spec.outputs]}
    failures: list[str] = []
    model = None
    for name, convert in _converters(loaded, tf):
        try:
            model = convert(signature, opset)
        except Exception as exc:
            log.warning("%s failed: %s: %s", name, type(exc).__name__, exc)
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        info["exporter"] = name
        break
    if model is None:
        raise RuntimeError("no ONNX converter worked: " + "; ".join(failures))
    if failures:
        info["fallback_reason"] = "; ".join(failures)
    if _erfc_to_erf(model):
        info["rewrites"] = ["Erfc -> 1 - Erf"]
    _rename(model, forward.spec)
    info["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                         None)
    return exportspec.pack(model.SerializeToString(), info)


def _converters(loaded: Loaded, tf: Any) -> list[tuple[str, Any]]:
    import keras
    import tf2onnx  # imported here: the plugin itself must not need it

    forward = loaded.functions[FORWARD]
    keras_model = loaded.owner if isinstance(loaded.owner, keras.Model) else None

    def from_keras(signature: list[Any], opset: int) -> Any:
        model = _unrolled(keras_model, keras)
        return tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)[0]

    def from_function(signature: list[Any], opset: int) -> Any:
        # the worker's own forward (training=False for Keras, the signature for SavedModels)
        fn = tf.function(lambda *t: forward.run(*t), input_signature=signature)
        return tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)[0]

    def keras_export(signature: list[Any], opset: int) -> Any:
        import onnx

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.onnx"
            keras_model.export(str(path), format="onnx", input_signature=signature,
                               opset_version=opset, verbose=False)
            return onnx.load(str(path))

    if keras_model is None:
        return [("tf2onnx.convert.from_function", from_function)]
    return [("tf2onnx.convert.from_keras", from_keras),
            ("tf2onnx.convert.from_function", from_function),
            ("keras.Model.export(format='onnx')", keras_export)]


def _unrolled(model: Any, keras: Any) -> Any:
    """A copy of ``model`` with its RNN layers unrolled (the same weights), or ``model``
    itself when it has none or a sequence length is dynamic (unrolling needs it fixed)."""
    rnns = [layer for layer in model.layers
            if isinstance(layer, keras.layers.RNN) and not layer.get_config().get("unroll")]
    if not rnns or any(len(r.input.shape) < 2 or r.input.shape[1] is None for r in rnns):
        return model

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if layer in rnns:
            config["unroll"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    log.info("exporting %s with unrolled RNN layers", ", ".join(r.name for r in rnns))
    return copy


def _erfc_to_erf(model: Any) -> int:
    """tf2onnx writes TF's Erfc (exact GELU) as an ``Erfc`` node, which no ONNX runtime
    knows: replace each with ``1 - Erf(x)``."""
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    found = [n for n in graph.node if n.op_type == "Erfc"]
    if not found:
        return 0
    inferred = shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.value_info]}
    nodes: list[Any] = []
    for node in graph.node:
        if node.op_type != "Erfc":
            nodes.append(node)
            continue
        p = f"{node.name or 'erfc'}_{len(nodes)}"
        dtype = helper.tensor_dtype_to_np_dtype(types.get(node.input[0]) or 1)  # 1: float
        graph.initializer.append(numpy_helper.from_array(np.array(1.0, dtype), f"{p}_one"))
        nodes += [helper.make_node("Erf", [node.input[0]], [f"{p}_erf"]),
                  helper.make_node("Sub", [f"{p}_one", f"{p}_erf"], [node.output[0]])]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(found)


def _rename(model: Any, spec: FunctionSpec) -> None:
    """Graph inputs/outputs to the declared names (by position), leading dynamic dim to batch."""
    graph = model.graph
    renames: dict[str, str] = {}
    for values, specs in ((graph.input, spec.inputs), (graph.output, spec.outputs)):
        real = [v for v in values if v.name not in {i.name for i in graph.initializer}]
        if len(real) != len(specs):
            raise ValueError(f"the ONNX graph has {len(real)} inputs/outputs where the function "
                             f"declares {len(specs)}")
        for value, s in zip(real, specs):
            if value.name != s.name:
                renames[value.name] = s.name
                value.name = s.name
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].dim_param:
                dims[0].dim_param = "batch"
    if renames:
        for node in graph.node:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]


def offer(loaded: Loaded, tf: Any) -> None:
    """Add export_onnx to the loaded functions, so that describe() lists it; the plugin's
    call() sends it here with its args (a plain Function gets tensors only)."""
    from .sources import Function

    loaded.functions[FUNCTION] = Function(SPEC, lambda: _packed(export_onnx(loaded, tf, {})))


def _packed(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return tuple(outputs[s.name] for s in SPEC.outputs)
