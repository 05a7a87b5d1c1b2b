"""numpy <-> torch without copies where torch allows it, and wire dtype names.

Imported by the plugin only inside ``load``, after torch is known to be there.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from interop_runtime import aligned, to_numpy_dtype

NUMPY_ALIGNMENT = 16

BFLOAT16 = to_numpy_dtype("bfloat16")  # ml_dtypes' numpy dtype, as the codec decodes it

# Below this size pinning costs more than the asynchronous copy saves.
PIN_MIN_BYTES = 1 << 20

WIRE_TO_TORCH: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "uint16": torch.uint16,
    "uint32": torch.uint32,
    "uint64": torch.uint64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}
TORCH_TO_WIRE: dict[torch.dtype, str] = {v: k for k, v in WIRE_TO_TORCH.items()}


def wire_name(dtype: torch.dtype) -> str | None:
    """The wire name of a torch dtype, or None (= any) for dtypes the wire lacks (float8...)."""
    return TORCH_TO_WIRE.get(dtype)


def to_tensor(array: np.ndarray, device: torch.device, *, copy: bool = False) -> torch.Tensor:
    """A tensor over ``array``'s memory on the CPU; a copy only when asked or unavoidable.

    Input frames arrive as read-only numpy views of the received message. torch has
    no read-only tensors, so it warns once and shares the memory anyway; we share it
    on purpose (no copy per call) and silence only that warning. The plugin checks
    afterwards that the model did not write into it (see ``TorchPlugin.call``).
    """
    base = np.asarray(array)
    is_bf16 = base.dtype == BFLOAT16
    if is_bf16:
        base = base.view(np.int16)  # torch.from_numpy has no bfloat16; reinterpret the bits
    if base.dtype.byteorder == ">" or not base.flags.aligned or any(s < 0 for s in base.strides):
        copy = True  # shapes torch cannot wrap
    if copy:
        base = np.array(base, dtype=base.dtype.newbyteorder("="), order="C")
    # frames sit at arbitrary offsets; BLAS picks kernels by alignment, so a misaligned
    # input would give last-bit differences from the same model run in-process. numpy
    # itself guarantees 16 bytes, and that is what in-process results are computed on
    base = aligned(base, NUMPY_ALIGNMENT)
    if base.flags.writeable:
        tensor = torch.from_numpy(base)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(base)
    if is_bf16:
        tensor = tensor.view(torch.bfloat16)
    if device.type != "cpu":
        # pinned staging lets the host-to-device copy run asynchronously on the stream
        if tensor.nbytes >= PIN_MIN_BYTES:
            tensor = tensor.pin_memory()
        tensor = tensor.to(device, non_blocking=True)
    return tensor


def to_numpy(value: Any) -> np.ndarray:
    """A host numpy array for a model output (shares memory for CPU tensors)."""
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    tensor = value.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    tensor = tensor.resolve_conj().resolve_neg()  # lazy conj/neg views have no numpy form
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(BFLOAT16)
    return tensor.numpy()
