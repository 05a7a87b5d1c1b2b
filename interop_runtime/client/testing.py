"""Helpers for tests of interop-runtime and of code built on it (shipped, not ad hoc)."""

from __future__ import annotations

from typing import Any

NUMPY_OPS = "interop_runtime.worker.numpy_ops"


def numpy_worker(name: str, *functions: str, **extra: Any) -> dict[str, Any]:
    """A worker spec for the built-in NumPy plugin hosting functions from numpy_ops."""
    config = {"functions": {f: f"{NUMPY_OPS}:{f}" for f in functions}, **extra.pop("config", {})}
    return {"name": name, "plugin": "numpy", "config": config, **extra}
