"""Pipelines from YAML: a graph spec plus how to make its inputs.

    graph: {name: ..., nodes: ..., edges: [...], inputs: ..., outputs: ...}
    inputs:
      x: {random: {shape: [4, 8], dtype: float32, seed: 0}}
      y: {value: [[1, 2]], dtype: float32}
      z: {file: z.npy}            # .npy only, loaded with allow_pickle=False
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from interop_runtime.wire.dtypes import to_numpy_dtype
from interop_runtime.wire.payloads import GraphSpec

M = TypeVar("M", bound=BaseModel)
_PROBLEMS = {"extra_forbidden": "unknown key", "missing": "missing key"}


class ConfigError(ValueError):
    """A config file that cannot be used: ``FILE: KEY: problem`` (or ``FILE:LINE: ...``)."""

    def __init__(self, path: str | Path, problem: str, key: str | None = None) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


def describe_validation(exc: ValidationError, prefix: str = "", limit: int = 3) -> str:
    """pydantic's errors as ``key.path: problem``, the first few, separated by ``; ``."""
    errors = exc.errors()
    parts = []
    for err in errors[:limit]:
        key = ".".join([*([prefix] if prefix else []), *(str(p) for p in err["loc"])])
        said = str(err["msg"]).removeprefix("Value error, ")  # our validators' own words
        parts.append(f"{key or '(top level)'}: {_PROBLEMS.get(err['type'], said)}")
    more = len(errors) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def read_yaml(path: str | Path) -> Any:
    """A YAML file's data; a missing file or a syntax error is a ConfigError naming it."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(path, "no such file") from None
    except OSError as exc:
        raise ConfigError(path, exc.strerror or str(exc)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(where, f"YAML syntax: {getattr(exc, 'problem', None) or exc}"
                          ) from None


def validate_config(model: type[M], data: Any, path: str | Path, prefix: str = "") -> M:
    """``model`` from a file's data; pydantic's errors become a ConfigError naming the file
    and each key (under ``prefix``)."""
    if data is None:
        raise ConfigError(path, "the file is empty")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, describe_validation(exc, prefix)) from None


def load_yaml_model(model: type[M], path: str | Path) -> M:
    """Read and validate a YAML config file (a cluster or a pipeline) with one-line errors."""
    return validate_config(model, read_yaml(path), path)


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    graph: GraphSpec
    inputs: dict[str, dict[str, Any]] = {}
    repeat: int = Field(1, ge=1)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineSpec:
        return load_yaml_model(cls, path)


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
    out = {}
    for name, entry in spec.inputs.items():
        try:
            out[name] = make_input(entry, base)
        except FileNotFoundError as exc:
            raise ValueError(f"inputs.{name}: no such file: {exc.filename or exc}") from None
        except (ValueError, TypeError, KeyError, OSError) as exc:
            raise ValueError(f"inputs.{name}: {exc}") from None
    return out
