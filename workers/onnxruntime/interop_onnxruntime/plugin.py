"""The ONNX Runtime worker plugin: one ``.onnx`` model offered as the function ``run``.

Config::

    model: model.onnx          # external weight files next to it are found by path
    intra_op_threads: 4        # optional: threads inside one operator
    self_contained: true       # optional: refuse tensors kept in external files (checks.py)

The function is called ``run``, with no alias: one name per function keeps
``describe`` and graph specs unambiguous. Its inputs and outputs are the model's
own (names, element types, shapes; symbolic or unknown dims are dynamic). The
device picks the execution provider: cpu -> CPUExecutionProvider, cuda:N ->
CUDAExecutionProvider on device N, or a DeviceUnavailable error at load.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interop_runtime import (
    DeviceUnavailable,
    FunctionSpec,
    TensorSpec,
    UnknownFunctionError,
    UnknownTargetError,
    UnsupportedError,
    WorkerPlugin,
    aligned,
    parse_device,
    to_numpy_dtype,
)

if TYPE_CHECKING:
    import onnx
    import onnxruntime

FUNCTION = "run"
NUMPY_ALIGNMENT = 16  # what numpy guarantees, so results match in-process runs
BFLOAT16 = to_numpy_dtype("bfloat16")
ONNX_BFLOAT16 = 16  # TensorProto.BFLOAT16
CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")

# onnxruntime's type strings -> wire dtype names (tensor types only; others are "any")
ORT_TO_WIRE: dict[str, str] = {
    f"tensor({ort})": wire for ort, wire in [
        ("bool", "bool"), ("int8", "int8"), ("int16", "int16"), ("int32", "int32"),
        ("int64", "int64"), ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"),
        ("uint64", "uint64"), ("float16", "float16"), ("bfloat16", "bfloat16"),
        ("float", "float32"), ("double", "float64"), ("complex64", "complex64"),
        ("complex128", "complex128"), ("string", "string")]
}


def _tensor_spec(arg: Any, conv_inputs: set[str], ranked: set[str]) -> TensorSpec:
    """A TensorSpec from an onnxruntime NodeArg; named (symbolic) or missing dims -> None,
    and no shape at all (any rank) when the model declares none: onnxruntime reports
    that as [], which would wrongly read as a 0-d tensor."""
    dtype = ORT_TO_WIRE.get(arg.type)
    known = dtype and arg.name in ranked
    shape = [d if isinstance(d, int) else None for d in arg.shape] if known else None
    # ONNX convolutions are channels-first by definition
    layout = "NCHW" if arg.name in conv_inputs and shape is not None and len(shape) == 4 else None
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape, layout=layout)


def _ranked(model: onnx.ModelProto) -> set[str]:
    """Graph inputs and outputs whose type declares a shape (of any rank, 0 included)."""
    return {v.name for v in [*model.graph.input, *model.graph.output]
            if v.type.tensor_type.HasField("shape")}


def _conv_inputs(model: onnx.ModelProto) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type in CONV_OPS and n.input}


def _refuse_missing_locale(path: Path, exc: Exception) -> None:
    """String operators (StringNormalizer: en_US.UTF-8 by default) need the host's locale;
    onnxruntime's own message for a missing one is a C++ trace."""
    text = str(exc)
    if "Failed to construct locale" in text:
        name = text.split("locale with name:", 1)[-1].split(":", 1)[0].strip() or "?"
        raise ValueError(f"model {str(path)!r} needs locale {name!r}, which this host lacks: "
                         f"install it (localedef -i en_US -f UTF-8 en_US.UTF-8, or set LOCPATH) "
                         f"or set the node's 'locale' attribute") from None


def _as_ort_strings(a: np.ndarray) -> np.ndarray:
    """onnxruntime takes strings as object (or ``<U``) arrays, not StringDType ones."""
    return a.astype(object) if a.dtype.kind == "T" else a


class OnnxRuntimePlugin(WorkerPlugin):
    install_hint = "pip install onnxruntime onnx"

    def __init__(self) -> None:
        self._session: onnxruntime.InferenceSession | None = None
        self._path: Path | None = None
        self._spec = FunctionSpec(name=FUNCTION)
        self._bfloat16 = False

    def load(self, config: Mapping[str, Any], device: str) -> None:
        import onnx  # here, not at module level: missing packages become install hints
        import onnxruntime as ort

        if not config.get("model"):
            raise ValueError("the onnxruntime plugin needs 'model: path/to/model.onnx'")
        path = Path(config["model"]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file {str(path)!r} does not exist")
        dev = parse_device(device)
        providers: list[Any] = ["CPUExecutionProvider"]
        if dev.is_gpu:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise DeviceUnavailable(
                    f"device {device!r} was asked for but onnxruntime {ort.__version__} has no "
                    f"CUDAExecutionProvider (it has: {', '.join(ort.get_available_providers())}); "
                    "install onnxruntime-gpu. Refusing to fall back to the CPU")
            # CPU stays listed for the odd operator CUDA lacks; the device itself is CUDA
            providers = [("CUDAExecutionProvider", {"device_id": dev.index}), *providers]
        options = ort.SessionOptions()
        if config.get("intra_op_threads"):
            options.intra_op_num_threads = int(config["intra_op_threads"])
        if config.get("self_contained"):  # a model from elsewhere: no external data files
            from .checks import refuse_external_data

            refuse_external_data(path)
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            _refuse_missing_locale(path, exc)
            raise
        if dev.is_gpu and "CUDAExecutionProvider" not in session.get_providers():
            # onnxruntime drops a provider it cannot initialise (missing CUDA/cuDNN libraries)
            # with only a log line; that would be a silent CPU fallback
            raise DeviceUnavailable(f"onnxruntime could not start CUDAExecutionProvider on "
                                    f"{device!r} (see its log above); not falling back to the CPU")
        graph = onnx.load(str(path), load_external_data=False)  # the graph only, for layouts
        conv, ranked = _conv_inputs(graph), _ranked(graph)
        untensored = [i for i in session.get_inputs() if not i.type.startswith("tensor(")]
        if untensored:  # a sequence or map cannot travel: the model cannot be fed
            raise UnsupportedError(f"model {str(path)!r}: input {untensored[0].name!r} is a "
                                   f"{untensored[0].type}; only tensors travel between workers")
        # sequence and map outputs (a ZipMap's probabilities) cannot travel either: they are
        # left out, and the function's doc says so, so that its tensor outputs still serve
        outputs = [o for o in session.get_outputs() if o.type.startswith("tensor(")]
        dropped = [f"{o.name} ({o.type})" for o in session.get_outputs() if o not in outputs]
        if not outputs:
            raise UnsupportedError(f"model {str(path)!r} has no tensor outputs (only "
                                   f"{', '.join(dropped)})")
        doc = " ".join(filter(None, [graph.doc_string, f"Outputs left out (not tensors): "
                                     f"{', '.join(dropped)}." if dropped else ""]))
        self._spec = FunctionSpec(
            name=FUNCTION, doc=doc or None,
            inputs=[_tensor_spec(i, conv, ranked) for i in session.get_inputs()],
            outputs=[_tensor_spec(o, conv, ranked) for o in outputs])
        dtypes = {s.dtype for s in [*self._spec.inputs, *self._spec.outputs]}
        self._bfloat16 = "bfloat16" in dtypes
        if self._bfloat16 and "string" in dtypes:
            # bfloat16 needs OrtValues, and onnxruntime makes no OrtValue from strings
            raise UnsupportedError(f"model {str(path)!r} has both bfloat16 and string tensors; "
                                   "onnxruntime's Python API cannot feed both in one run")
        self._session, self._path = session, path

    def describe(self) -> list[FunctionSpec]:
        return [self._spec]

    def output_layouts(self, function: str) -> Mapping[str, str]:
        return {o.name: o.layout for o in self._spec.outputs if o.layout}

    def call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any]
             ) -> Mapping[str, Any]:
        if function != FUNCTION:
            raise UnknownFunctionError(f"no function {function!r}; an ONNX model offers only "
                                       f"{FUNCTION!r}", field="function")
        if args:
            raise UnsupportedError(f"{FUNCTION} takes no arguments (got {', '.join(args)}): an "
                                   "ONNX graph has only tensor inputs", field="args")
        if self._session is None:
            raise UnknownTargetError("no model is loaded", field="function")
        names = [o.name for o in self._spec.outputs]
        if self._bfloat16:
            return dict(zip(names, self._run_ort_values(inputs, names), strict=True))
        # onnxruntime only reads its inputs, so read-only frames go in without a copy,
        # unless misaligned: kernels chosen by alignment would change the last bits
        feed = {n: _as_ort_strings(a) if a.dtype.kind in "OUT" else aligned(a, NUMPY_ALIGNMENT)
                for n, a in inputs.items()}
        return dict(zip(names, self._session.run(names, feed), strict=True))

    def _run_ort_values(self, inputs: Mapping[str, np.ndarray], names: list[str]
                        ) -> list[np.ndarray]:
        """onnxruntime's numpy bridge has no bfloat16; go through OrtValues for such models."""
        import onnxruntime as ort

        assert self._session is not None
        feeds = {n: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a.view(np.uint16),
                                                                     ONNX_BFLOAT16)
                 if a.dtype == BFLOAT16 else ort.OrtValue.ortvalue_from_numpy(a)
                 for n, a in inputs.items()}
        results = []
        for value in self._session.run_with_ort_values(names, feeds):
            if value.element_type() != ONNX_BFLOAT16:
                results.append(value.numpy())
                continue
            if value.device_name().lower() != "cpu":
                raise UnsupportedError("bfloat16 outputs on a GPU session are not supported")
            out = np.empty(value.shape(), dtype=np.uint16)
            ctypes.memmove(out.ctypes.data, value.data_ptr(), out.nbytes)
            results.append(out.view(BFLOAT16))
        return results

    def get_params(self, names: Sequence[str] | None) -> dict[str, np.ndarray]:
        import onnx
        from onnx import numpy_helper

        if self._path is None:
            raise UnknownTargetError("no model is loaded", field="names")
        # read from the file on demand: the session keeps its own copy of the weights
        model = onnx.load(str(self._path))
        inits = {i.name: i for i in model.graph.initializer}
        wanted = list(inits) if names is None else list(names)
        missing = [n for n in wanted if n not in inits]
        if missing:
            raise UnknownTargetError(f"no initializers named {', '.join(missing)}", field="names")
        return {n: numpy_helper.to_array(inits[n]) for n in wanted}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        raise UnsupportedError("an onnxruntime session's weights are fixed; export the model "
                               "again with new weights (or serve it with the torch plugin)")

    def model_graph(self) -> dict[str, Any]:
        from .modelgraph import build  # the model as a neutral graph (ops.compat.modelgraph)

        if self._path is None:
            raise UnknownTargetError("no model is loaded")
        return build(self._path).to_dict()

    def close(self) -> None:
        self._session = None
