"""Typed payloads that messages carry: graph specs (GRAPH ``spec``) and worker plans
(CONTROL plan ``args.plan``).

They live in the wire layer because ``protocol/schema.json`` describes them next to the
message headers; ``interop_runtime.graph`` validates and compiles them.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from interop_runtime.wire.errors import GraphError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def split_port(ref: str, *, what: str) -> tuple[str, str]:
    """'node.port' -> (node, port); node names have no dots, port names may."""
    node, dot, port = ref.partition(".")
    if not dot or not node or not port:
        raise GraphError(f"{what} {ref!r} must look like 'node.port'", field=what)
    return node, port


class NodeSpec(BaseModel):
    """One node: a function on a named ``worker``, or on any replica of a ``pool``."""

    model_config = ConfigDict(extra="forbid")
    worker: str = ""
    pool: str | None = None
    function: str
    args: dict[str, Any] = {}
    # idempotent nodes may be re-run: if their worker is lost mid-run, the coordinator waits
    # for it to come back (a supervisor restarts it) and runs the whole graph again, up to
    # this many times, within the run's deadline
    retries: int = Field(default=0, ge=0, le=10)

    @model_validator(mode="after")
    def _one_target(self) -> NodeSpec:
        if bool(self.worker) == bool(self.pool):
            raise ValueError("a node names either a worker or a pool, exactly one of them")
        return self

    @property
    def target(self) -> str:
        """What the node runs on, for people: ``w1``, or ``pool:resnet``."""
        return self.worker or f"pool:{self.pool}"


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: str  # producer "node.output"
    dst: str  # consumer "node.input"

    def label(self) -> str:
        return f"{self.src} -> {self.dst}"


def _shorthands_in_schema(schema: dict[str, Any]) -> None:
    """The schema accepts what the validators below accept: ``"a.y -> b.x"`` edges and a
    single string for a graph input that feeds one node input."""
    props = schema["properties"]
    props["edges"]["items"] = {"anyOf": [props["edges"]["items"],
                                         {"type": "string", "pattern": ARROW_PATTERN}]}
    props["inputs"]["additionalProperties"] = {
        "anyOf": [props["inputs"]["additionalProperties"], {"type": "string"}]}


ARROW_PATTERN = r"^\s*[^.\s]+\.\S+\s*->\s*[^.\s]+\.\S+\s*$"


class GraphSpec(BaseModel):
    """A DAG. ``inputs`` maps a graph input to the node inputs it feeds; ``outputs``
    maps a graph output to the node output it comes from."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_shorthands_in_schema)
    name: str
    nodes: dict[str, NodeSpec]
    edges: list[EdgeSpec] = []
    inputs: dict[str, list[str]] = {}
    outputs: dict[str, str] = {}

    @field_validator("edges", mode="before")
    @classmethod
    def _edges_from_arrows(cls, value: Any) -> Any:
        # YAML-friendly "a.y -> b.x" strings are accepted next to {src, dst} maps
        if isinstance(value, list):
            out = []
            for item in value:
                if isinstance(item, str) and "->" in item:
                    src, _, dst = item.partition("->")
                    out.append({"src": src.strip(), "dst": dst.strip()})
                else:
                    out.append(item)
            return out
        return value

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs_as_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value


class Route(BaseModel):
    """Where one output goes: a node input on some worker."""

    worker: str
    endpoint: str
    node: str
    input: str
    public_key: str | None = None  # the consumer inbox's CURVE key, when CURVE is on
    host: str | None = None  # the consumer's host key: same as ours -> shared memory
    # set when the consumer node runs on a replica pool: the node's routes then list every
    # replica, and each run's DATA goes only to the one its placement names
    pool: str | None = None


class Feeder(BaseModel):
    """A worker allowed to send DATA for one node input (its producer along an edge)."""

    worker: str
    public_key: str | None = None  # its CURVE key: the consumer checks DATA against it


class PlanNode(BaseModel):
    node: str
    function: str
    args: dict[str, Any] = {}
    inputs: list[str] = Field(default_factory=list)  # input names to wait for
    routes: dict[str, list[Route]] = Field(default_factory=dict)  # output -> consumers
    graph_outputs: dict[str, list[str]] = Field(default_factory=dict)  # output -> graph outputs
    # input -> the workers whose DATA it accepts; graph inputs come from the coordinator
    feeders: dict[str, list[Feeder]] = Field(default_factory=dict)
    # inputs fed by graph inputs: in a direct run a client sends these to the inbox itself
    client_inputs: list[str] = Field(default_factory=list)


class WorkerPlan(BaseModel):
    graph: str
    version: int
    worker: str
    nodes: list[PlanNode]
