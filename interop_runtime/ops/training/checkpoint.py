"""Training checkpoints that resume: parameters, optimizer state and the loop's scalars.

``PATH`` (e.g. ``student.safetensors``) names three files, written after every epoch:

    student.safetensors            the worker's parameters (what ``interop params import``
                                   and ``loops.restore`` read: nothing else is in it)
    student.optimizer.safetensors  the optimizer's tensors (Adam's moments, step counts)
    student.json                   scalars: epoch, step, seed, batch size, the next epoch's
                                   order state, the optimizer's hyper-parameters, history

Tensors only in safetensors and scalars only in JSON: reading a checkpoint never runs
code (no pickle). Each file is written beside itself and renamed into place, the JSON last,
so the JSON always names an epoch whose tensors are complete. Loading checks every name
and shape against the worker before writing anything, and says which file and key differ.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save_file

from interop_runtime.client.client import Client
from interop_runtime.ops.params.plane import load_params, save_params, write_params
from interop_runtime.ops.training.spec import (
    LOAD_OPTIMIZER_STATE,
    OPTIMIZER_STATE,
    STATE_PREFIX,
    read_meta,
    state_tensors,
)
from interop_runtime.wire.errors import (
    BadArgumentError,
    InteropError,
    ShapeMismatchError,
    UnknownTargetError,
)

FORMAT = "interop.training-checkpoint/1"
MAX_JSON_BYTES = 16 << 20  # epochs of history and a few scalars; anything bigger is not ours


@dataclass(frozen=True)
class Files:
    params: Path
    optimizer: Path
    scalars: Path


def files(path: str | Path) -> Files:
    """The three files a checkpoint path names."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix == ".safetensors" else p
    params = p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")
    return Files(params, stem.with_name(stem.name + ".optimizer.safetensors"),
                 stem.with_name(stem.name + ".json"))


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def save(client: Client, worker: str, path: str | Path, scalars: dict[str, Any]) -> int:
    """The worker's parameters and optimizer state plus ``scalars``; returns the PARAM version.

    Run between steps (the loop calls it after an epoch), so both reads see one state."""
    f = files(path)
    params = client.get_params(worker)
    out = client.call(worker, OPTIMIZER_STATE)
    meta = read_meta(out["meta"])
    record = {"format": FORMAT, "worker": worker, "param_version": params.version,
              "optimizer": meta, "files": {"params": f.params.name,
                                           "optimizer": f.optimizer.name}, **scalars}
    tmp = [_tmp(f.params), _tmp(f.optimizer), _tmp(f.scalars)]
    save_params(params, tmp[0], worker=worker)
    save_file({k: _c_order(v) for k, v in state_tensors(out).items()}, str(tmp[1]),
              metadata={"interop.worker": worker, "interop.optimizer": str(meta.get("optimizer"))})
    tmp[2].write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    for src, dst in zip(tmp, (f.params, f.optimizer, f.scalars), strict=True):
        os.replace(src, dst)
    return params.version


def _c_order(a: np.ndarray) -> np.ndarray:
    # not np.ascontiguousarray: it turns 0-d state (a step count) into shape (1,)
    return a if a.flags.c_contiguous else a.copy(order="C")


def read(path: str | Path) -> dict[str, Any]:
    """A checkpoint's scalars (its JSON), checked to be one of ours."""
    f = files(path)
    for p in (f.scalars, f.params, f.optimizer):
        if not p.is_file():
            raise FileNotFoundError(2, "no checkpoint file (resume needs the files an earlier "
                                       "run with the same checkpoint path wrote)", str(p))
    if f.scalars.stat().st_size > MAX_JSON_BYTES:
        raise BadArgumentError(f"{f.scalars}: over {MAX_JSON_BYTES} bytes, not a training checkpoint")
    try:
        record = json.loads(f.scalars.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadArgumentError(f"{f.scalars}: not JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise BadArgumentError(f"{f.scalars}: key format is not {FORMAT!r}")
    for key, kind in (("epoch", int), ("order", dict), ("optimizer", dict)):
        if not isinstance(record.get(key), kind):
            raise BadArgumentError(f"{f.scalars}: key {key} is missing or not a {kind.__name__}")
    return record


def _tensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_params(path)[0]
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadArgumentError(f"{path}: not a readable safetensors file: {exc}") from None


def _check_params(client: Client, worker: str, params: dict[str, np.ndarray], where: Path
                  ) -> None:
    have = client.list_params(worker)["params"]
    extra = sorted(set(params) - set(have))
    if extra:
        raise UnknownTargetError(f"{where}: worker {worker!r} has no parameter {extra[0]!r}"
                                 f" (the checkpoint is of another model?)", field=extra[0],
                                 worker=worker)
    missing = sorted(set(have) - set(params))
    if missing:
        raise UnknownTargetError(f"{where}: has no parameter {missing[0]!r}, which worker "
                                 f"{worker!r} has", field=missing[0], worker=worker)
    for name, arr in params.items():
        if list(arr.shape) != list(have[name]["shape"]):
            raise ShapeMismatchError(f"{where}: parameter {name!r} has shape {arr.shape}, "
                                     f"worker {worker!r} has {tuple(have[name]['shape'])}",
                                     field=name, worker=worker)


def load(client: Client, worker: str, path: str | Path) -> dict[str, Any]:
    """Parameters and optimizer state back into ``worker``; returns the checkpoint's scalars.

    Everything is checked first (parameters here, optimizer state in the worker, which
    refuses before it changes anything): a mismatch leaves the worker as it was."""
    f = files(path)
    record = read(path)
    params, optim = _tensors(f.params), _tensors(f.optimizer)
    _check_params(client, worker, params, f.params)
    inputs = {STATE_PREFIX + k: v for k, v in optim.items()}
    try:
        client.call(worker, LOAD_OPTIMIZER_STATE, inputs, meta=record["optimizer"])
    except InteropError as exc:  # the worker's message, told with the file it came from
        raise type(exc)(f"{f.optimizer}: {exc.message}", field=exc.field,
                        worker=exc.worker or worker) from None
    write_params(client, worker, params)
    return record
