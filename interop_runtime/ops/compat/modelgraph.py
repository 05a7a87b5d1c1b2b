"""A framework-neutral description of a model: ops, tensors and parameters.

Each plugin translates its framework's own graph (torch.export, the Keras layer
graph, an ONNX graph) into a ``ModelGraph``; compatibility reports
(``report.py``) and cross-framework parameter copies (``ops.params.mapping``)
only ever see this form. It travels as plain JSON-able data in the reply to
CONTROL ``model``; no framework is imported here.

Normalized op types (``OpInfo.type``) are lower-case words shared by all
plugins: linear, conv2d, batchnorm, relu, sigmoid, tanh, gelu, softmax,
maxpool2d, avgpool2d, global_avgpool, flatten, reshape, transpose, add, mul,
concat, matmul, dropout, identity, pad, split, embedding, layernorm, attention (scaled
dot-product attention; attrs ``heads`` / ``head_dim`` where the structure shows them),
gru, lstm; anything else is ``other:<framework op>``. A linear op's weight is
``out,in`` (torch Linear) or ``in,out`` (Keras Dense, GPT-2's Conv1D read through addmm).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# ops that move or relabel data without computing with it; alignment skips them
PASSTHROUGH_TYPES = frozenset({"identity", "dropout", "reshape", "flatten", "transpose", "cast",
                               "constant", "contiguous", "split"})
# ops a comparison shows; every other op without parameters is bookkeeping (sizes, masks,
# position ids), counted but collapsed
SIGNIFICANT_TYPES = frozenset({"linear", "conv2d", "batchnorm", "layernorm", "embedding",
                               "attention", "gru", "lstm", "relu", "sigmoid", "tanh", "gelu",
                               "softmax", "log_softmax", "maxpool2d", "avgpool2d",
                               "global_avgpool", "matmul"})
# parameter roles that carry no learned value (torch's BatchNorm step counter)
COUNTER_ROLES = frozenset({"num_batches_tracked"})

# Weight layouts (ParamInfo.layout), by the axes of the stored array:
#   "out,in"  torch Linear, ONNX Gemm with transB=1      "in,out"  Keras Dense, ONNX MatMul
#   "OIHW"    torch / ONNX Conv                          "HWIO"    Keras Conv2D
LINEAR_LAYOUTS = ("out,in", "in,out")
CONV_LAYOUTS = ("OIHW", "HWIO")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TensorInfo(_Model):
    """One tensor between ops: None shape = unknown rank, None entries = dynamic dims."""

    name: str
    shape: list[int | None] | None = None
    dtype: str | None = None  # wire dtype name
    layout: str | None = None  # NCHW / NHWC for images, when known


class ParamInfo(_Model):
    """One parameter (or buffer) under the name the framework uses for it."""

    name: str
    shape: list[int]
    dtype: str | None = None
    op: str | None = None  # the OpInfo.name that owns it
    role: str = "other"  # weight, bias, gamma, beta, running_mean, running_var, ...
    layout: str | None = None  # weights only: "out,in", "in,out", "OIHW", "HWIO"
    trainable: bool = True

    @staticmethod
    def role_from_name(name: str) -> str:
        """A role from a parameter's own name, for graphs whose ops could not be read."""
        leaf = name.replace(":0", "").rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower()
        aliases = {"kernel": "weight", "moving_mean": "running_mean",
                   "moving_variance": "running_var", "recurrent_kernel": "recurrent_weight",
                   "embeddings": "weight"}
        known = {"weight", "bias", "gamma", "beta", "running_mean", "running_var",
                 "num_batches_tracked", "recurrent_weight"}
        return aliases.get(leaf, leaf if leaf in known else "other")


class OpInfo(_Model):
    name: str
    type: str  # normalized, see the module docstring
    framework_type: str  # e.g. aten.linear.default, Dense, Gemm
    inputs: list[str] = []  # tensor names
    outputs: list[str] = []
    attrs: dict[str, Any] = {}  # kernel, stride, padding, eps, in/out features, ...
    params: list[str] = []  # ParamInfo names


class ModelGraph(_Model):
    framework: str  # torch, tensorflow, onnx, ...
    name: str | None = None
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    ops: list[OpInfo] = []  # in execution (topological) order
    tensors: dict[str, TensorInfo] = {}
    params: list[ParamInfo] = []
    notes: list[str] = []  # what the translation could not see (e.g. a fallback was used)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the wire (msgpack) or JSON."""
        return self.model_dump(mode="json")

    def param(self, name: str) -> ParamInfo | None:
        return next((p for p in self.params if p.name == name), None)

    def op(self, name: str) -> OpInfo | None:
        return next((o for o in self.ops if o.name == name), None)

    def producer(self, tensor: str) -> OpInfo | None:
        return next((o for o in self.ops if tensor in o.outputs), None)

    def significant_ops(self) -> list[OpInfo]:
        """The ops a comparison aligns and shows: known compute types, and any op that
        holds learned parameters (constants and counters do not count)."""
        learned = {p.name for p in self.params if p.role not in COUNTER_ROLES | {"constant"}}
        return [o for o in self.ops if o.type in SIGNIFICANT_TYPES
                or any(n in learned for n in o.params)]

    def consumers(self, tensor: str) -> list[OpInfo]:
        return [o for o in self.ops if tensor in o.inputs]

    def compute_ops(self) -> list[OpInfo]:
        """The ops that compute (alignment works on these)."""
        return [o for o in self.ops if o.type not in PASSTHROUGH_TYPES]
