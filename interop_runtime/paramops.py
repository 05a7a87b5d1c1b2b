"""Parameter operations across workers, through PARAM messages (client side, numpy only).

Every read reports the version it got; every write can demand the version it expects
(optimistic concurrency), so two writers never silently overwrite each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from .client import Client

VERSION_KEY = "interop.param_version"


def export_safetensors(client: Client, worker: str, path: str | Path,
                       names: Sequence[str] | None = None) -> int:
    """Write a worker's parameters to a safetensors file; returns the version written."""
    params = client.get_params(worker, names)
    arrays = {n: np.ascontiguousarray(a) for n, a in params.items()}
    save_file(arrays, str(path), metadata={VERSION_KEY: str(params.version), "worker": worker})
    return params.version


def import_safetensors(client: Client, worker: str, path: str | Path, *,
                       expected_version: int | None = None) -> int:
    """Load a safetensors file into a worker's parameters; returns the new version."""
    return client.set_params(worker, load_file(str(path)), expected_version=expected_version)


def _check_same_keys(sets: Sequence[Mapping[str, Any]], workers: Sequence[str]) -> None:
    first = set(sets[0])
    for w, s in zip(workers[1:], sets[1:]):
        if set(s) != first:
            diff = sorted(first ^ set(s))
            raise ValueError(f"worker {w!r} has different parameters from {workers[0]!r}: "
                             f"{', '.join(diff[:5])}")
