"""Pipelines from YAML: a graph spec plus how to make its inputs.

    graph: {name: ..., nodes: ..., edges: [...], inputs: ..., outputs: ...}
    inputs:
      x: {random: {shape: [4, 8], dtype: float32, seed: 0}}
      y: {value: [[1, 2]], dtype: float32}
      z: {file: z.npy}            # .npy only, loaded with allow_pickle=False
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict

from interop_runtime.wire.dtypes import to_numpy_dtype
from interop_runtime.wire.payloads import GraphSpec


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    graph: GraphSpec
    inputs: dict[str, dict[str, Any]] = {}
    repeat: int = 1

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineSpec:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))


def make_input(entry: dict[str, Any], base: Path | None = None) -> np.ndarray:
    if "random" in entry:
        r = entry["random"]
        rng = np.random.default_rng(r.get("seed", 0))
        dtype = to_numpy_dtype(r.get("dtype", "float32"))
        if dtype.kind in "iu":
            return rng.integers(r.get("low", 0), r.get("high", 10), size=r["shape"]).astype(dtype)
        return rng.standard_normal(r["shape"]).astype(dtype)
    if "value" in entry:
        return np.asarray(entry["value"], dtype=to_numpy_dtype(entry.get("dtype", "float32")))
    if "file" in entry:
        path = Path(entry["file"])
        return np.load(base / path if base and not path.is_absolute() else path, allow_pickle=False)
    raise ValueError(f"input entry needs 'random', 'value' or 'file': {entry}")


def make_inputs(spec: PipelineSpec, base: Path | None = None) -> dict[str, np.ndarray]:
    return {name: make_input(entry, base) for name, entry in spec.inputs.items()}
