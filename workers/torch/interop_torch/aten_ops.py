"""ATen op names -> the neutral op types of interop_runtime.ops.compat.modelgraph, shared by
the torch.export walk (modelgraph.py) and the TorchScript walk (torchscript_graph.py)."""

from __future__ import annotations

# ATen op packet name -> normalized type
ATEN = {
    "linear": "linear", "addmm": "linear", "conv2d": "conv2d", "convolution": "conv2d",
    "_convolution": "conv2d", "batch_norm": "batchnorm",
    "_native_batch_norm_legit_no_training": "batchnorm", "native_batch_norm": "batchnorm",
    "layer_norm": "layernorm", "native_layer_norm": "layernorm", "embedding": "embedding",
    "scaled_dot_product_attention": "attention", "relu": "relu", "relu_": "relu",
    "sigmoid": "sigmoid", "tanh": "tanh", "gelu": "gelu", "softmax": "softmax",
    "_softmax": "softmax", "log_softmax": "log_softmax", "max_pool2d": "maxpool2d",
    "max_pool2d_with_indices": "maxpool2d", "avg_pool2d": "avgpool2d",
    "adaptive_avg_pool2d": "global_avgpool", "flatten": "flatten", "view": "reshape",
    "reshape": "reshape", "_unsafe_view": "reshape", "squeeze": "reshape",
    "unsqueeze": "reshape", "permute": "transpose", "transpose": "transpose", "t": "transpose",
    "add": "add", "add_": "add", "mul": "mul", "cat": "concat", "matmul": "matmul", "mm": "matmul",
    "bmm": "matmul", "dropout": "dropout", "clone": "identity", "contiguous": "identity",
    "alias": "identity", "detach": "identity", "_to_copy": "cast", "pad": "pad",
    "constant_pad_nd": "pad", "split": "split", "split_with_sizes": "split", "chunk": "split",
    "unbind": "split",
}
# parameter roles by position among an op's arguments (None: not a parameter slot)
ROLES: dict[str, list[str | None]] = {
    "linear": ["input", "weight", "bias"], "conv2d": ["input", "weight", "bias"],
    "batchnorm": ["input", "gamma", "beta", "running_mean", "running_var"],
    "layernorm": ["input", None, "gamma", "beta"], "embedding": ["weight", "indices"],
}
ADDMM_ROLES: list[str | None] = ["bias", "input", "weight"]  # addmm(bias, x, W): x @ W + bias
WEIGHT_LAYOUT = {"linear": "out,in", "conv2d": "OIHW", "embedding": "rows,dim"}
# ops that only move data (the neutral graph's passthrough types): they own no parameter
MOVES_DATA = frozenset({"identity", "dropout", "reshape", "flatten", "transpose", "cast", "split"})
TRANSPOSES = frozenset({"t", "transpose", "permute", "numpy_T"})


def packet(target: str) -> str:
    """'aten.linear.default' / 'aten::linear' -> 'linear'."""
    if target.startswith("aten::"):
        return target[6:]
    return target.split(".")[1] if target.startswith("aten.") else target


def linear_attrs(shape: list[int], layout: str) -> dict[str, int]:
    out_f, in_f = (shape[0], shape[1]) if layout == "out,in" else (shape[1], shape[0])
    return {"in_features": int(in_f), "out_features": int(out_f)}
