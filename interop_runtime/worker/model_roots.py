"""Where a model loaded over the wire may read its files: inside the worker's model roots.

A client that may load models (CONTROL load) could otherwise make a worker open any file
its user can read. A config that arrives over the wire is checked, value by value: every
string that looks like a path must resolve, symbolic links followed, inside one of the
folders the worker was started with (``--model-root``, and its ``--model-repository``).
Relative paths are taken from the first root. The plugin then gets the resolved absolute
path, so it opens exactly the file that was checked. A worker without roots takes no file
from the wire. Configs from the worker's own command line are not checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from interop_runtime.wire.errors import UnauthorizedError

# a string that ends so is taken for a file even without a separator
MODEL_SUFFIXES = frozenset({
    ".onnx", ".ort", ".pt", ".pth", ".bin", ".safetensors", ".keras", ".h5", ".hdf5", ".pb",
    ".tflite", ".ckpt", ".npz", ".npy", ".json", ".yaml", ".yml", ".txt", ".model"})


def parse_roots(value: str | os.PathLike[str] | None) -> tuple[Path, ...]:
    """``DIR[:DIR...]`` (os.pathsep between folders) as resolved folders."""
    if value is None:
        return ()
    return tuple(Path(p).expanduser().resolve() for p in str(value).split(os.pathsep) if p)


def _looks_like_path(value: str) -> bool:
    if not value:
        return False
    if "/" in value or os.sep in value or value.startswith(("~", ".")):
        return True
    return Path(value).suffix.lower() in MODEL_SUFFIXES or os.path.lexists(value)


def _confined(value: str, roots: tuple[Path, ...], at: str) -> str:
    if not roots:
        raise UnauthorizedError(
            f"{at} = {value!r} names a file, and this worker has no model root "
            f"(--model-root): a model loaded over the wire may read no files", field=at)
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else roots[0] / path).resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise UnauthorizedError(
            f"{at} = {value!r} is outside this worker's model roots "
            f"({os.pathsep.join(str(r) for r in roots)})", field=at)
    return str(resolved)


def confine_paths(value: Any, roots: Iterable[Path], at: str = "config") -> Any:
    """``value`` (a wire config) with every path resolved inside ``roots``; raises
    UnauthorizedError naming the key of the first one that is not."""
    roots = tuple(roots)
    if isinstance(value, dict):
        return {k: confine_paths(v, roots, f"{at}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [confine_paths(v, roots, f"{at}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str) and _looks_like_path(value):
        return _confined(value, roots, at)
    return value
