"""Build a torch model from a worker config on a checked device.

Every path here comes from the worker's own config file, which the operator
controls, never from the wire, and each is trusted like code: a factory is
imported, and torch.export.load itself unpickles some payloads (custom objects,
pickled constants) with weights_only=False. This module never calls torch.load;
extra weights come from safetensors, which holds tensors only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interop_runtime import DeviceUnavailable, import_callable, parse_device

SOURCES = ("factory", "torchscript", "exported", "onnx")


@dataclass
class Loaded:
    model: torch.nn.Module
    exported: torch.export.ExportedProgram | None  # kept for its signature


def torch_device(device: str, memory_fraction: float | None = None) -> torch.device:
    """The torch device for a worker's device name; DeviceUnavailable if it is not here."""
    dev = parse_device(device)
    if not dev.is_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"device {device!r} was asked for but torch {torch.__version__} sees no CUDA device "
            f"(CUDA build: {torch.version.cuda or 'none'}); refusing to fall back to the CPU")
    count = torch.cuda.device_count()
    if dev.index >= count:
        raise DeviceUnavailable(f"device {device!r} was asked for but torch sees {count} CUDA "
                                f"device(s): cuda:0..cuda:{count - 1}")
    torch.cuda.set_device(dev.index)
    if memory_fraction is not None:
        if not 0.0 < memory_fraction <= 1.0:
            raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
        # caps this process's caching allocator so several workers can share one GPU
        torch.cuda.set_per_process_memory_fraction(memory_fraction, dev.index)
    return torch.device("cuda", dev.index)


def _existing(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist")
    return p


def load_model(config: Mapping[str, Any], device: torch.device) -> Loaded:
    given = [k for k in SOURCES if config.get(k)]
    if len(given) != 1:
        raise ValueError(f"the torch plugin needs exactly one of {', '.join(SOURCES)} in its "
                         f"config (got {', '.join(given) or 'none'})")
    exported = None
    if given[0] == "factory":
        if config.get("seed") is not None:
            torch.manual_seed(int(config["seed"]))  # reproducible initial weights
        factory = import_callable(config["factory"], what="factory")
        model = factory(**(config.get("kwargs") or {}))
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"factory {config['factory']} returned {type(model).__name__}, "
                            "not a torch.nn.Module")
        model = model.to(device)
    elif given[0] == "onnx":  # through onnx2torch, see onnx_import.py
        from . import onnx_import

        model, spec = onnx_import.load(_existing(config["onnx"], "onnx"))
        model.interop_spec = spec  # the ONNX graph's names, dtypes and shapes (signatures.py)
        model = model.to(device)
    elif given[0] == "torchscript":
        model = torch.jit.load(str(_existing(config["torchscript"], "torchscript")),
                               map_location=device)
    else:
        exported = torch.export.load(str(_existing(config["exported"], "exported")))
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            # constants baked into the graph move too, which module.to() would miss
            exported = move_to_device_pass(exported, device)
        model = exported.module()
    if config.get("state"):
        from safetensors.torch import load_file

        state = load_file(str(_existing(config["state"], "state")), device=str(device))
        model.load_state_dict(state, strict=bool(config.get("strict", True)))
    if exported is None:
        model.eval()  # exported graphs are fixed at export time and refuse eval()
    return Loaded(model=model, exported=exported)
