"""Graph specs: nodes that are worker functions, edges wiring outputs to inputs.

Pure data. ``validate`` checks a spec against the registered function signatures
(unknown worker or function, cycles, dangling or doubly-fed inputs, dtype/shape/
layout along every edge); ``compile_plans`` turns a valid graph into one plan per
worker, so that a run costs only the messages that carry its tensors.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import GraphError, InteropError, UnknownFunctionError, UnknownTargetError
from .messages import FunctionSpec, TensorSpec
from .signatures import check_edge

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def split_port(ref: str, *, what: str) -> tuple[str, str]:
    """'node.port' -> (node, port); node names have no dots, port names may."""
    node, dot, port = ref.partition(".")
    if not dot or not node or not port:
        raise GraphError(f"{what} {ref!r} must look like 'node.port'", field=what)
    return node, port


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker: str
    function: str
    args: dict[str, Any] = {}
    # idempotent nodes may be re-run: if their worker is lost mid-run, the coordinator waits
    # for it to come back (a supervisor restarts it) and runs the whole graph again, up to
    # this many times, within the run's deadline
    retries: int = Field(default=0, ge=0, le=10)


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: str  # producer "node.output"
    dst: str  # consumer "node.input"

    def label(self) -> str:
        return f"{self.src} -> {self.dst}"


class GraphSpec(BaseModel):
    """A DAG. ``inputs`` maps a graph input to the node inputs it feeds; ``outputs``
    maps a graph output to the node output it comes from."""

    model_config = ConfigDict(extra="forbid")
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


# --- validation ------------------------------------------------------------------------

class Route(BaseModel):
    """Where one output goes: a node input on some worker."""

    worker: str
    endpoint: str
    node: str
    input: str
    public_key: str | None = None  # the consumer inbox's CURVE key, when CURVE is on


class PlanNode(BaseModel):
    node: str
    function: str
    args: dict[str, Any] = {}
    inputs: list[str] = Field(default_factory=list)  # input names to wait for
    routes: dict[str, list[Route]] = Field(default_factory=dict)  # output -> consumers
    graph_outputs: dict[str, list[str]] = Field(default_factory=dict)  # output -> graph outputs


class WorkerPlan(BaseModel):
    graph: str
    version: int
    worker: str
    nodes: list[PlanNode]


class CompiledGraph(BaseModel):
    """What the coordinator keeps per registered graph."""

    spec: GraphSpec
    version: int
    order: list[str]  # topological
    input_routes: dict[str, list[tuple[str, str, str]]]  # graph input -> [(worker, node, input)]
    input_specs: dict[str, TensorSpec]
    source_nodes: list[str]  # nodes with no inputs at all: triggered by an empty DATA
    plans: dict[str, WorkerPlan]  # worker -> plan


def _fn(functions: Mapping[str, Mapping[str, FunctionSpec]], name: str, node: NodeSpec
        ) -> FunctionSpec:
    worker_fns = functions.get(node.worker)
    if worker_fns is None:
        raise UnknownTargetError(f"node {name!r}: no live worker named {node.worker!r}",
                                 node=name, worker=node.worker, field="worker")
    fn = worker_fns.get(node.function)
    if fn is None:
        offered = ", ".join(sorted(worker_fns)) or "none"
        raise UnknownFunctionError(
            f"node {name!r}: worker {node.worker!r} has no function {node.function!r} "
            f"(it offers: {offered})", node=name, worker=node.worker, field="function")
    return fn


def validate(spec: GraphSpec, functions: Mapping[str, Mapping[str, FunctionSpec]]
             ) -> list[str]:
    """Check ``spec`` against the registered functions; return a topological order.

    Raises the first problem found (a GraphError subclass or a TargetError) with the
    node or edge at fault; ``.others`` holds any further problems."""
    problems: list[InteropError] = []
    fns: dict[str, FunctionSpec] = {}
    for name, node in spec.nodes.items():
        if not NAME_RE.match(name):
            problems.append(GraphError(f"node name {name!r} must match {NAME_RE.pattern}",
                                       node=name))
            continue
        try:
            fns[name] = _fn(functions, name, node)
        except InteropError as exc:
            problems.append(exc)

    feeders: dict[tuple[str, str], list[str]] = defaultdict(list)  # (node, input) -> who feeds
    succ: dict[str, set[str]] = {n: set() for n in spec.nodes}

    def port(ref: str, what: str, direction: str) -> tuple[str, TensorSpec] | None:
        try:
            node, name = split_port(ref, what=what)
        except GraphError as exc:
            problems.append(exc)
            return None
        if node not in spec.nodes:
            problems.append(UnknownTargetError(f"{what} {ref!r}: no node named {node!r}",
                                               node=node, edge=ref))
            return None
        fn = fns.get(node)
        if fn is None:
            return None  # already reported
        ports = fn.inputs if direction == "in" else fn.outputs
        for p in ports:
            if p.name == name:
                return node, p
        kind = "input" if direction == "in" else "output"
        have = ", ".join(p.name for p in ports) or "none"
        problems.append(GraphError(f"{what} {ref!r}: {spec.nodes[node].function} has no {kind} "
                                   f"{name!r} (it has: {have})", node=node, edge=ref))
        return None

    for edge in spec.edges:
        src = port(edge.src, "edge source", "out")
        dst = port(edge.dst, "edge target", "in")
        if src and dst:
            feeders[(dst[0], dst[1].name)].append(edge.label())
            succ[src[0]].add(dst[0])
            err = check_edge(src[1], dst[1], edge=edge.label(), node=dst[0])
            if err:
                problems.append(err)

    for gin, targets in spec.inputs.items():
        if not targets:
            problems.append(GraphError(f"graph input {gin!r} feeds nothing", field=gin))
        seen: list[TensorSpec] = []
        for ref in targets:
            dst = port(ref, f"graph input {gin!r} target", "in")
            if dst:
                feeders[(dst[0], dst[1].name)].append(f"input {gin}")
                for other in seen:
                    err = check_edge(other, dst[1], edge=f"{gin} -> {ref}", node=dst[0])
                    if err:
                        problems.append(err)
                seen.append(dst[1])

    for gout, ref in spec.outputs.items():
        port(ref, f"graph output {gout!r} source", "out")

    for name, fn in fns.items():
        for p in fn.inputs:
            fed = feeders.get((name, p.name), [])
            if not fed:
                problems.append(GraphError(f"input {name}.{p.name} is dangling: no edge or graph "
                                           f"input feeds it", node=name, field=p.name))
            elif len(fed) > 1:
                problems.append(GraphError(f"input {name}.{p.name} is fed twice: by "
                                           f"{' and '.join(fed)}", node=name, field=p.name,
                                           edge=fed[1]))

    order, cycle = _toposort(list(spec.nodes), succ)
    if cycle:
        problems.append(GraphError(f"graph has a cycle through nodes {', '.join(cycle)}",
                                   node=cycle[0]))
    if not spec.outputs:
        problems.append(GraphError("graph declares no outputs", field="outputs"))
    if problems:
        first = problems[0]
        if len(problems) > 1:
            first.message += f" (and {len(problems) - 1} more: " + "; ".join(
                p.message for p in problems[1:4]) + ")"
            first.args = (first.message,)
        first.others = problems[1:]  # type: ignore[attr-defined]
        raise first
    return order


def _toposort(nodes: list[str], succ: Mapping[str, set[str]]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm; returns (order, nodes left on a cycle)."""
    indeg = {n: 0 for n in nodes}
    for n in nodes:
        for m in succ.get(n, ()):
            indeg[m] += 1
    ready = [n for n in nodes if indeg[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in sorted(succ.get(n, ())):
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    left = [n for n in nodes if indeg[n] > 0]
    return order, left


def compile_graph(spec: GraphSpec, functions: Mapping[str, Mapping[str, FunctionSpec]],
                  endpoints: Mapping[str, str], version: int,
                  keys: Mapping[str, str | None] | None = None) -> CompiledGraph:
    """Validate and turn the graph into one plan per worker."""
    order = validate(spec, functions)
    plan_nodes: dict[str, PlanNode] = {}
    for name in order:
        node = spec.nodes[name]
        fn = functions[node.worker][node.function]
        plan_nodes[name] = PlanNode(node=name, function=node.function, args=node.args,
                                    inputs=[p.name for p in fn.inputs])
    for edge in spec.edges:
        src_node, out = split_port(edge.src, what="edge")
        dst_node, inp = split_port(edge.dst, what="edge")
        worker = spec.nodes[dst_node].worker
        plan_nodes[src_node].routes.setdefault(out, []).append(
            Route(worker=worker, endpoint=endpoints[worker], node=dst_node, input=inp,
                  public_key=(keys or {}).get(worker)))
    for gout, ref in spec.outputs.items():
        src_node, out = split_port(ref, what="output")
        plan_nodes[src_node].graph_outputs.setdefault(out, []).append(gout)

    input_routes: dict[str, list[tuple[str, str, str]]] = {}
    input_specs: dict[str, TensorSpec] = {}
    for gin, targets in spec.inputs.items():
        input_routes[gin] = []
        for ref in targets:
            node, inp = split_port(ref, what="input")
            worker = spec.nodes[node].worker
            input_routes[gin].append((worker, node, inp))
            fn = functions[worker][spec.nodes[node].function]
            input_specs.setdefault(gin, next(p for p in fn.inputs if p.name == inp))
    plans: dict[str, WorkerPlan] = {}
    for name in order:
        worker = spec.nodes[name].worker
        plans.setdefault(worker, WorkerPlan(graph=spec.name, version=version, worker=worker,
                                            nodes=[])).nodes.append(plan_nodes[name])
    sources = [n for n in order if not plan_nodes[n].inputs]
    return CompiledGraph(spec=spec, version=version, order=order, input_routes=input_routes,
                         input_specs=input_specs, source_nodes=sources, plans=plans)


class Graph:
    """Build a GraphSpec in code.

        g = Graph("diamond")
        g.node("a", "w1", "scale", factor=2.0)
        g.edge("a.y", "b.x")
        g.input("x", "a.x")
        g.output("out", "d.y")
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: dict[str, NodeSpec] = {}
        self._edges: list[EdgeSpec] = []
        self._inputs: dict[str, list[str]] = {}
        self._outputs: dict[str, str] = {}

    def node(self, name: str, worker: str, function: str, *, retries: int = 0, **args: Any
             ) -> Graph:
        """Add a node; ``args`` go to the function, ``retries`` > 0 marks it idempotent."""
        self._nodes[name] = NodeSpec(worker=worker, function=function, args=args, retries=retries)
        return self

    def edge(self, src: str, dst: str) -> Graph:
        self._edges.append(EdgeSpec(src=src, dst=dst))
        return self

    def input(self, name: str, *targets: str) -> Graph:
        self._inputs.setdefault(name, []).extend(targets)
        return self

    def output(self, name: str, source: str) -> Graph:
        self._outputs[name] = source
        return self

    def spec(self) -> GraphSpec:
        return GraphSpec(name=self.name, nodes=dict(self._nodes), edges=list(self._edges),
                         inputs={k: list(v) for k, v in self._inputs.items()},
                         outputs=dict(self._outputs))
