"""Parameter operations across workers, through PARAM messages (client side, numpy only).

Every read reports the version it got; every write can demand the version it expects
(optimistic concurrency), so two writers never silently overwrite each other.

- ``read_params`` / ``write_params``: one worker, select by names or a name prefix.
- ``weighted_average`` (pure numpy) and ``average`` / ``interpolate`` (federated averaging
  over N workers, written back with each worker's read version as ``expected_version``).
- ``broadcast``: one worker's parameters to N others.
- ``export_safetensors`` / ``import_safetensors``: files that carry the version they hold.

Averaging needs identical names, shapes and dtypes (twins of one framework). A parameter
set of another framework is brought into the destination's layout by a ``mapping`` hook,
``(src_params) -> dst_params`` (see ``ops.params.mapping``); this module does no layout work.

Failures are typed (wire.errors): ModelMismatchError when parameter sets do not fit (names,
shapes, dtypes), UnsupportedError for an argument the operation cannot take (weights,
alpha, a worker named twice), UnknownTargetError for a prefix that selects nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from interop_runtime.client.client import Client
from interop_runtime.client.results import Params
from interop_runtime.wire.dtypes import wire_dtype
from interop_runtime.wire.errors import ModelMismatchError, UnknownTargetError, UnsupportedError

VERSION_KEY = "interop.param_version"
WORKER_KEY = "interop.worker"

ParamMapping = Callable[[Params], Mapping[str, np.ndarray]]
"""Turns one worker's parameters into the destination's names and layouts."""


class ParamVersionConflict(UnsupportedError):
    """A write expected a version the worker is no longer at: someone else wrote between
    our read and our write. Carries the worker, the expected and the current version, and
    (for multi-worker writes) the workers already written before the conflict."""

    def __init__(self, worker: str, expected: int, current: int | None,
                 written: Mapping[str, int] | None = None) -> None:
        now = "an unknown version" if current is None else f"version {current}"
        message = (f"worker {worker!r}: parameters changed concurrently (read at version "
                   f"{expected}, now at {now}); nothing was written to {worker!r}")
        if written:  # writes are per worker: say exactly what already happened
            message += "; already written: " + ", ".join(
                f"{w} (now version {v})" for w, v in written.items())
        super().__init__(message, field="version", worker=worker)
        self.expected = expected
        self.current = current
        self.written = dict(written or {})


@dataclass
class AverageResult:
    """What ``average`` computed and where it went, with every version involved."""

    params: dict[str, np.ndarray]
    weights: dict[str, float]                                  # normalized, by worker
    read_versions: dict[str, int]                              # version each source was read at
    written: dict[str, int] = field(default_factory=dict)      # worker -> its new version


@dataclass
class BroadcastResult:
    source: str
    source_version: int
    written: dict[str, int] = field(default_factory=dict)      # worker -> its new version


# --- one worker ----------------------------------------------------------------------------

def list_params(client: Client, worker: str, prefix: str | None = None) -> dict[str, Any]:
    """``{"version": N, "params": {name: {"dtype", "shape"}}}``, optionally by name prefix."""
    body = client.list_params(worker)
    params = body.get("params", {})
    if prefix is not None:
        params = {n: p for n, p in params.items() if n.startswith(prefix)}
    return {"version": body.get("version", 0), "params": params}


def read_params(client: Client, worker: str, names: Sequence[str] | None = None, *,
                prefix: str | None = None) -> Params:
    """Read all of a worker's parameters, the ones named, or those whose name starts with
    ``prefix``; ``.version`` is the version the arrays were read at."""
    if prefix is not None:
        listed = list_params(client, worker, prefix)["params"]
        if not listed:
            raise UnknownTargetError(f"worker {worker!r} has no parameters starting with "
                                     f"{prefix!r}", field="prefix", worker=worker)
        wanted = [n for n in (names if names is not None else listed) if n in listed]
        names = wanted
    return client.get_params(worker, names)


def write_params(client: Client, worker: str, params: Mapping[str, np.ndarray], *,
                 expected_version: int | None = None) -> int:
    """Write parameters; returns the new version. A stale ``expected_version`` raises
    ParamVersionConflict naming the worker."""
    try:
        return client.set_params(worker, params, expected_version=expected_version)
    except UnsupportedError as exc:
        if exc.field != "version" or expected_version is None:
            raise
        try:
            current: int | None = client.list_params(worker).get("version")
        except Exception:
            current = None
        raise ParamVersionConflict(worker, expected_version, current) from exc


# --- averaging ---------------------------------------------------------------------------

def normalize_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Weights summing to 1 (equal when None); rejects wrong length, negatives, zero sum."""
    if n < 1:
        raise UnsupportedError("averaging needs at least one parameter set")
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise UnsupportedError(f"{len(w)} weights for {n} parameter sets")
    if any(not np.isfinite(x) or x < 0 for x in w):
        raise UnsupportedError(f"weights must be finite and non-negative, got {w}")
    total = sum(w)
    if total <= 0:
        raise UnsupportedError("weights sum to zero")
    return [x / total for x in w]


def check_compatible(sets: Sequence[Mapping[str, np.ndarray]], labels: Sequence[str]) -> None:
    """Same names, shapes and dtypes in every set, or a ModelMismatchError naming the first
    difference."""
    ref, ref_label = sets[0], labels[0]
    for label, s in zip(labels[1:], sets[1:]):
        if set(s) != set(ref):
            diff = sorted(set(ref) ^ set(s))
            raise ModelMismatchError(f"{label!r} and {ref_label!r} have different parameter "
                                     f"names: "
                                     f"{', '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}")
        for name, a in s.items():
            b = ref[name]
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ModelMismatchError(
                    f"parameter {name!r}: {label!r} has {a.dtype}{list(a.shape)}, "
                    f"{ref_label!r} has {b.dtype}{list(b.shape)}", field=name)


def weighted_average(sets: Sequence[Mapping[str, np.ndarray]],
                     weights: Sequence[float] | None = None, *,
                     labels: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """sum_i w_i * p_i with w normalized to sum 1, per parameter, in the parameters' dtype.

    Floating parameters accumulate in float64 (complex128) and are cast back; integer ones
    (counters such as BatchNorm's num_batches_tracked) are rounded to the nearest integer;
    bool parameters cannot be averaged."""
    labels = list(labels) if labels is not None else [f"set {i}" for i in range(len(sets))]
    w = normalize_weights(weights, len(sets))
    check_compatible(sets, labels)
    out: dict[str, np.ndarray] = {}
    for name, first in sets[0].items():
        dtype = first.dtype
        if dtype == np.bool_:
            raise ModelMismatchError(f"parameter {name!r} is bool and cannot be averaged")
        acc_dtype = np.complex128 if np.issubdtype(dtype, np.complexfloating) else np.float64
        acc = np.zeros(first.shape, acc_dtype)
        for wi, s in zip(w, sets):
            acc += wi * s[name].astype(acc_dtype)
        if np.issubdtype(dtype, np.integer):
            acc = np.rint(acc)
        out[name] = acc.astype(dtype)
    return out


def _mapper(mapping: ParamMapping | Mapping[str, ParamMapping] | None, worker: str,
            targets: Sequence[str]) -> ParamMapping | None:
    if mapping is None:
        return None
    if isinstance(mapping, Mapping):
        return mapping.get(worker)
    return None if worker in targets else mapping  # a target is already in the target layout


def _check_destination(client: Client, worker: str, params: Mapping[str, np.ndarray]) -> int:
    """The destination's current version, after checking it holds these names/shapes/dtypes."""
    listed = client.list_params(worker)
    have = listed.get("params", {})
    for name, a in params.items():
        meta = have.get(name)
        if meta is None:
            raise ModelMismatchError(f"worker {worker!r} has no parameter {name!r}")
        if list(meta["shape"]) != list(a.shape) or wire_dtype(a.dtype) != meta["dtype"]:
            raise ModelMismatchError(
                f"parameter {name!r}: worker {worker!r} has {meta['dtype']}{list(meta['shape'])}, "
                f"the new value is {a.dtype}{list(a.shape)}", field=name, worker=worker)
    return int(listed.get("version", 0))


def _write_all(client: Client, params: Mapping[str, np.ndarray],
               expected: Mapping[str, int]) -> dict[str, int]:
    """Write to every worker in order; a conflict names the worker and what was written."""
    written: dict[str, int] = {}
    for worker, version in expected.items():
        try:
            written[worker] = write_params(client, worker, params, expected_version=version)
        except ParamVersionConflict as exc:
            if not written:
                raise
            raise ParamVersionConflict(worker, exc.expected, exc.current, written) from exc
    return written


def average(client: Client, workers: Sequence[str], weights: Sequence[float] | None = None, *,
            into: str | Sequence[str] | None = None, names: Sequence[str] | None = None,
            prefix: str | None = None,
            mapping: ParamMapping | Mapping[str, ParamMapping] | None = None,
            dry_run: bool = False) -> AverageResult:
    """Federated averaging: read each worker's parameters, compute sum_i w_i p_i (weights
    normalized; equal when None) and write the result to every source worker, or only to
    ``into``. Each write carries the version the destination was read at, so a concurrent
    writer raises ParamVersionConflict naming the worker (writes are per worker, not atomic
    across workers; the error lists the ones already written).

    ``mapping`` (a callable applied to every source that is not a target, or a dict per source
    worker) brings parameter sets of other frameworks into the targets' layout (all targets
    share it); with a mapping, ``into`` is required, since the result fits only that layout."""
    workers = list(workers)
    if len(set(workers)) != len(workers):
        raise UnsupportedError(f"a worker is named twice: {workers}")
    targets = [into] if isinstance(into, str) else list(into) if into is not None else workers
    if mapping is not None and into is None:
        raise UnsupportedError("with a mapping, name the target worker(s) with into=")
    w = normalize_weights(weights, len(workers))
    sets: list[Mapping[str, np.ndarray]] = []
    read_versions: dict[str, int] = {}
    for worker in workers:
        p = read_params(client, worker, names, prefix=prefix)
        read_versions[worker] = p.version
        fn = _mapper(mapping, worker, targets)
        sets.append(dict(fn(p)) if fn is not None else p)
    result = AverageResult(weighted_average(sets, w, labels=workers), dict(zip(workers, w)),
                           read_versions)
    if dry_run:
        return result
    expected = {t: read_versions[t] if t in read_versions
                else _check_destination(client, t, result.params) for t in targets}
    result.written = _write_all(client, result.params, expected)
    return result


def interpolate(client: Client, a: str, b: str, alpha: float, *,
                into: str | Sequence[str] | None = None, **kwargs: Any) -> AverageResult:
    """alpha * p_a + (1 - alpha) * p_b, written like ``average`` (to both, or to ``into``)."""
    if not 0.0 <= alpha <= 1.0:
        raise UnsupportedError(f"alpha must be in [0, 1], got {alpha}")
    return average(client, [a, b], [alpha, 1.0 - alpha], into=into, **kwargs)


def broadcast(client: Client, source: str, destinations: Sequence[str], *,
              names: Sequence[str] | None = None, prefix: str | None = None,
              mapping: ParamMapping | Mapping[str, ParamMapping] | None = None
              ) -> BroadcastResult:
    """Copy one worker's parameters to others. Each destination is checked (names, shapes,
    dtypes) and written at the version it was checked at. ``mapping``: a callable for every
    destination, or a dict per destination, from the source's layout to the destination's."""
    if source in destinations:
        raise UnsupportedError(f"{source!r} is both the source and a destination")
    src = read_params(client, source, names, prefix=prefix)
    result = BroadcastResult(source, src.version)
    for dst in destinations:
        fn = mapping.get(dst) if isinstance(mapping, Mapping) else mapping
        params = dict(fn(src)) if fn is not None else dict(src)
        version = _check_destination(client, dst, params)
        result.written[dst] = write_params(client, dst, params, expected_version=version)
    return result


# --- files --------------------------------------------------------------------------------

def _c_order(a: np.ndarray) -> np.ndarray:
    # not np.ascontiguousarray: it turns 0-d parameters into shape (1,)
    return a if a.flags.c_contiguous else a.copy(order="C")


def export_safetensors(client: Client, worker: str, path: str | Path,
                       names: Sequence[str] | None = None, *, prefix: str | None = None) -> int:
    """Write a worker's parameters to a safetensors file; returns the version written,
    which the file's metadata keeps (``interop.param_version``, ``interop.worker``)."""
    params = read_params(client, worker, names, prefix=prefix)
    save_params(params, path, worker=worker)
    return params.version


def save_params(params: Params | Mapping[str, np.ndarray], path: str | Path, *,
                worker: str | None = None) -> None:
    """Save parameters (and their version, if they carry one) as safetensors."""
    meta = {}
    if isinstance(params, Params):
        meta[VERSION_KEY] = str(params.version)
    if worker is not None:
        meta[WORKER_KEY] = worker
    save_file({n: _c_order(np.asarray(a)) for n, a in params.items()}, str(path),
              metadata=meta or None)


def load_params(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A safetensors file's arrays and its metadata."""
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata() or {})
        arrays = {n: f.get_tensor(n) for n in f.keys()}
    return arrays, meta


def file_version(path: str | Path) -> int | None:
    """The parameter version a file was exported at (None if it does not say)."""
    _, meta = load_params(path)
    return int(meta[VERSION_KEY]) if VERSION_KEY in meta else None


def import_safetensors(client: Client, worker: str, path: str | Path, *,
                       expected_version: int | None = None,
                       verify_version: int | None = None) -> int:
    """Load a safetensors file into a worker's parameters (a restore); returns the new version.

    ``verify_version``: refuse the file unless its metadata says it holds that version.
    ``expected_version``: refuse the write unless the worker is at that version now."""
    arrays, meta = load_params(path)
    if verify_version is not None:
        recorded = meta.get(VERSION_KEY)
        if recorded is None or int(recorded) != verify_version:
            raise UnsupportedError(f"{path}: holds parameter version {recorded or 'unknown'} "
                             f"(from worker {meta.get(WORKER_KEY, 'unknown')!r}), "
                             f"not {verify_version}")
    return write_params(client, worker, arrays, expected_version=expected_version)
