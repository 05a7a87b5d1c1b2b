"""Typed payloads that messages carry: graph specs (GRAPH ``spec``) and worker plans
(CONTROL plan ``args.plan``).

They live in the wire layer because ``protocol/schema.json`` describes them next to the
message headers; ``interop_runtime.graph`` validates and compiles them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from msgspec import Meta

from interop_runtime.wire.errors import GraphError
from interop_runtime.wire.model import (
    WireModel,
    WireValidationError,
    error_location,
    names_a_field,
)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def split_port(ref: str, *, what: str) -> tuple[str, str]:
    """'node.port' -> (node, port); node names have no dots, port names may."""
    node, dot, port = ref.partition(".")
    if not dot or not node or not port:
        raise GraphError(f"{what} {ref!r} must look like 'node.port'", field=what)
    return node, port


class NodeSpec(WireModel, kw_only=True, forbid_unknown_fields=True):
    """One node: a function on a named ``worker``, or on any replica of a ``pool``."""

    worker: str = ""
    pool: str | None = None
    function: str
    args: dict[str, Any] = {}
    # idempotent nodes may be re-run: if their worker is lost mid-run, the coordinator waits
    # for it to come back (a supervisor restarts it) and runs the whole graph again, up to
    # this many times, within the run's deadline
    retries: Annotated[int, Meta(ge=0, le=10)] = 0

    def __post_init__(self) -> None:
        if bool(self.worker) == bool(self.pool):
            raise ValueError("a node names either a worker or a pool, exactly one of them")

    @property
    def target(self) -> str:
        """What the node runs on, for people: ``w1``, or ``pool:resnet``."""
        return self.worker or f"pool:{self.pool}"


class EdgeSpec(WireModel, kw_only=True, forbid_unknown_fields=True):
    src: str  # producer "node.output"
    dst: str  # consumer "node.input"

    def label(self) -> str:
        return f"{self.src} -> {self.dst}"


ARROW_PATTERN = r"^\s*[^.\s]+\.\S+\s*->\s*[^.\s]+\.\S+\s*$"


class GraphSpec(WireModel, kw_only=True, forbid_unknown_fields=True):
    """A DAG. ``inputs`` maps a graph input to the node inputs it feeds; ``outputs``
    maps a graph output to the node output it comes from."""

    name: Annotated[str, Meta(min_length=1, max_length=256)]  # what a RUN can name
    nodes: dict[str, NodeSpec]
    edges: list[EdgeSpec] = []
    inputs: dict[str, list[str]] = {}
    outputs: dict[str, str] = {}

    @classmethod
    def model_validate(cls, obj: Any) -> GraphSpec:
        """Also takes the YAML-friendly shorthands: an edge ``"a.y -> b.x"``, and a single
        string for a graph input that feeds one node input."""
        if isinstance(obj, dict):
            obj = _long_form(obj)
        try:
            return super().model_validate(obj)
        except WireValidationError as exc:
            raise _name_the_node(obj, exc) from None


def _long_form(spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    edges, inputs = spec.get("edges"), spec.get("inputs")
    if isinstance(edges, list):
        out["edges"] = [_edge(e) if isinstance(e, str) and "->" in e else e for e in edges]
    if isinstance(inputs, dict):
        out["inputs"] = {k: [v] if isinstance(v, str) else v for k, v in inputs.items()}
    return out


def _edge(arrow: str) -> dict[str, str]:
    src, _, dst = arrow.partition("->")
    return {"src": src.strip(), "dst": dst.strip()}


def shorthands_in_schema(defs: dict[str, Any]) -> None:
    """The schema accepts what ``GraphSpec.model_validate`` accepts: ``"a.y -> b.x"`` edges
    and a single string for a graph input that feeds one node input."""
    props = defs["GraphSpec"]["properties"]
    props["edges"]["items"] = {"anyOf": [props["edges"]["items"],
                                         {"type": "string", "pattern": ARROW_PATTERN}]}
    props["inputs"]["additionalProperties"] = {
        "anyOf": [props["inputs"]["additionalProperties"], {"type": "string"}]}


def _name_the_node(obj: Any, exc: WireValidationError) -> WireValidationError:
    """msgspec does not name map keys in its errors (``nodes.*``); a config error must say
    which node, so the nodes are checked one by one to find it."""
    loc, _ = error_location(exc)
    nodes = obj.get("nodes") if isinstance(obj, dict) else None
    if not loc.startswith("nodes.*") or not isinstance(nodes, dict):
        return exc
    for key, node in nodes.items():
        try:
            NodeSpec.model_validate(node)
        except WireValidationError as inner:
            where, problem = error_location(inner)
            steps = where.split(".") if where else []
            if names_a_field(problem):  # the field name comes from the message itself
                steps = steps[:-1]
            return WireValidationError(f"{problem} - at `$.{'.'.join(['nodes', str(key), *steps])}`")
    return exc


class Route(WireModel, kw_only=True):
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


class Feeder(WireModel, kw_only=True):
    """A worker allowed to send DATA for one node input (its producer along an edge)."""

    worker: str
    public_key: str | None = None  # its CURVE key: the consumer checks DATA against it


class PlanNode(WireModel, kw_only=True):
    node: str
    function: str
    args: dict[str, Any] = {}
    inputs: list[str] = []  # input names to wait for
    routes: dict[str, list[Route]] = {}  # output -> consumers
    graph_outputs: dict[str, list[str]] = {}  # output -> graph outputs
    # input -> the workers whose DATA it accepts; graph inputs come from the coordinator
    feeders: dict[str, list[Feeder]] = {}
    # inputs fed by graph inputs: in a direct run a client sends these to the inbox itself
    client_inputs: list[str] = []


class WorkerPlan(WireModel, kw_only=True):
    graph: str
    version: int
    worker: str
    nodes: list[PlanNode]
