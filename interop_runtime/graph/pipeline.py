"""Pipelines from YAML: a graph spec plus how to make its inputs.

    graph: {name: ..., nodes: ..., edges: [...], inputs: ..., outputs: ...}
    inputs:
      x: {random: {shape: [4, 8], dtype: float32, seed: 0}}
      y: {value: [[1, 2]], dtype: float32}
      z: {file: z.npy}            # .npy only, loaded with allow_pickle=False
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema

from interop_runtime.graph.config_files import ConfigError, read_yaml
from interop_runtime.wire.dtypes import to_numpy_dtype
from interop_runtime.wire.model import WireModel, WireValidationError, describe
from interop_runtime.wire.payloads import GraphSpec

M = TypeVar("M", bound="BaseModel | WireModel")
_PROBLEMS = {"extra_forbidden": "unknown key", "missing": "missing key"}
__all__ = ["ConfigError", "PipelineSpec", "read_yaml", "validate_config", "load_yaml_model",
           "describe_validation", "make_input", "make_inputs"]


def describe_validation(exc: ValidationError, prefix: str = "", limit: int = 3) -> str:
    """pydantic's errors as ``key.path: problem``, the first few, separated by ``; ``; a
    wire model inside (a pipeline's graph) adds its own path and words."""
    errors = exc.errors()
    parts = []
    for err in errors[:limit]:
        loc = [str(p) for p in err["loc"]]
        said = str(err["msg"]).removeprefix("Value error, ")  # our validators' own words
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, WireValidationError):
            where, said = describe(inner)
            loc += where.split(".") if where else []
        key = ".".join([*([prefix] if prefix else []), *loc])
        parts.append(f"{key or '(top level)'}: {_PROBLEMS.get(err['type'], said)}")
    more = len(errors) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate_config(model: type[M], data: Any, path: str | Path, prefix: str = "") -> M:
    """``model`` (a pydantic config, or a wire model) from a file's data; its errors become
    a ConfigError naming the file and each key (under ``prefix``)."""
    if data is None:
        raise ConfigError(path, "the file is empty")
    try:
        return cast(M, model.model_validate(data))
    except ValidationError as exc:
        raise ConfigError(path, describe_validation(exc, prefix)) from None
    except WireValidationError as exc:  # a wire model read from a file (a bare graph)
        where, said = describe(exc)
        key = ".".join(p for p in (prefix, where) if p)
        raise ConfigError(path, f"{key or '(top level)'}: {said}") from None


def load_yaml_model(model: type[M], path: str | Path) -> M:
    """Read and validate a YAML config file (a cluster or a pipeline) with one-line errors."""
    return validate_config(model, read_yaml(path), path)


# a wire model (msgspec) inside a pydantic config: checked by its own rules, shown in the
# config's JSON Schema as protocol/schema.json's GraphSpec
GraphField = Annotated[GraphSpec, PlainValidator(GraphSpec.model_validate),
                       WithJsonSchema({"$ref": "https://interop-runtime/protocol/schema.json"
                                               "#/$defs/GraphSpec"})]


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    graph: GraphField
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
