"""What a client gets back: a run's outputs with timings, and parameters with their version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class RunResult(dict[str, np.ndarray]):
    """A run's outputs by name, plus where the time went."""

    def __init__(self, outputs: Mapping[str, np.ndarray], body: Mapping[str, Any]) -> None:
        super().__init__(outputs)
        self.run: str = body.get("run", "")
        self.elapsed_us: int = body.get("elapsed_us", 0)
        self.timings: dict[str, dict[str, Any]] = body.get("timings", {})


class Params(dict[str, np.ndarray]):
    """Parameter tensors by name, and the version they were read at."""

    def __init__(self, arrays: Mapping[str, np.ndarray], version: int) -> None:
        super().__init__(arrays)
        self.version = version
