"""Small NumPy functions for examples, tests and benchmarks."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from interop_runtime.worker.numpy_plugin import numpy_function


@numpy_function(inputs=[{"name": "x"}], outputs=[{"name": "y"}])
def identity(x: np.ndarray) -> np.ndarray:
    """Returns its input unchanged (no copy)."""
    return x


@numpy_function(inputs=[{"name": "x", "dtype": "float32"}], outputs=[{"name": "y", "dtype": "float32"}])
def scale(x: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """y = factor * x"""
    return (x * np.float32(factor)).astype(np.float32)


@numpy_function(inputs=[{"name": "x", "dtype": "float32"}], outputs=[{"name": "y", "dtype": "float32"}])
def add_const(x: np.ndarray, value: float = 1.0) -> np.ndarray:
    """y = x + value"""
    return (x + np.float32(value)).astype(np.float32)


@numpy_function(inputs=[{"name": "a", "dtype": "float32"}, {"name": "b", "dtype": "float32"}],
                outputs=[{"name": "y", "dtype": "float32"}])
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a + b"""
    return a + b


@numpy_function(inputs=[{"name": "x", "dtype": "float32"}], outputs=[{"name": "y", "dtype": "float32"}])
def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.float32(0))


@numpy_function(inputs=[{"name": "x", "dtype": "float32", "shape": [None, None]}],
                outputs=[{"name": "y", "dtype": "float32", "shape": [None, None]}])
def linear(x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """y = x @ w (w is the worker's parameter 'w')."""
    return (x @ params["w"]).astype(np.float32)


@numpy_function(inputs=[{"name": "x"}], outputs=[{"name": "y"}])
def sleep(x: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    """Waits, then returns its input: for tests of timeouts and dying workers."""
    time.sleep(seconds)
    return x


@numpy_function(inputs=[{"name": "x"}], outputs=[{"name": "y"}])
def fail(x: np.ndarray, message: str = "deliberate failure") -> np.ndarray:
    raise RuntimeError(message)


@numpy_function(inputs=[{"name": "x"}], outputs=[{"name": "y"}])
def crash(x: np.ndarray) -> Any:
    """Kills its own process: a worker dying mid-run."""
    os._exit(17)


@numpy_function(inputs=[{"name": "x", "dtype": "string"}], outputs=[{"name": "y", "dtype": "string"}])
def upper(x: np.ndarray) -> np.ndarray:
    """y = x in upper case (a string tensor; returned as a StringDType array)."""
    return np.strings.upper(x.astype(np.dtypes.StringDType()))


@numpy_function(inputs=[{"name": "x", "dtype": "string"}], outputs=[{"name": "n", "dtype": "int64"}])
def str_len(x: np.ndarray) -> np.ndarray:
    """n = the length of each string in code points."""
    return np.strings.str_len(x.astype(np.dtypes.StringDType())).astype(np.int64)


@numpy_function(inputs=[], outputs=[{"name": "y", "dtype": "float32"}])
def constant(value: float = 1.0, shape: list[int] | None = None) -> np.ndarray:
    """A source node: no inputs, one constant output."""
    return np.full(shape or [1], value, dtype=np.float32)


def echo(**tensors: np.ndarray) -> dict[str, np.ndarray]:
    """Returns every input under its own name (declare inputs/outputs in the config)."""
    return dict(tensors)
