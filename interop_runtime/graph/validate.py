"""Validation of a graph spec against the live workers' function signatures: unknown
worker or function, cycles, dangling or doubly-fed inputs, dtype/shape/layout on every edge."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from interop_runtime.graph.signatures import check_edge, narrowest
from interop_runtime.wire.errors import (
    GraphError,
    InteropError,
    UnknownFunctionError,
    UnknownTargetError,
)
from interop_runtime.wire.messages import FunctionSpec, TensorSpec
from interop_runtime.wire.payloads import NAME_RE, GraphSpec, NodeSpec, split_port

Pools = Mapping[str, Sequence[str]]  # pool -> its live replicas


def function_of(functions: Mapping[str, Mapping[str, FunctionSpec]], name: str, node: NodeSpec,
                pools: Pools | None = None) -> FunctionSpec:
    if node.pool is not None:
        return _pool_function(functions, name, node, (pools or {}).get(node.pool, ()))
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


def _pool_function(functions: Mapping[str, Mapping[str, FunctionSpec]], name: str,
                   node: NodeSpec, replicas: Sequence[str]) -> FunctionSpec:
    """A pool node's function: the same signature on every replica, or a typed error that
    names the replica that differs (plans are compiled once for all of them)."""
    if not replicas:
        raise UnknownTargetError(f"node {name!r}: pool {node.pool!r} has no live replicas",
                                 node=name, field="pool")
    first: FunctionSpec | None = None
    for replica in replicas:
        fn = function_of(functions, name, NodeSpec(worker=replica, function=node.function))
        if first is None:
            first = fn
        elif (fn.inputs, fn.outputs) != (first.inputs, first.outputs):
            raise GraphError(f"node {name!r}: replica {replica!r} of pool {node.pool!r} "
                             f"describes {node.function!r} differently from {replicas[0]!r}",
                             node=name, worker=replica, field="pool")
    assert first is not None
    return first


def validate(spec: GraphSpec, functions: Mapping[str, Mapping[str, FunctionSpec]],
             pools: Pools | None = None) -> list[str]:
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
            fns[name] = function_of(functions, name, node, pools)
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
        # one tensor feeds every target: each must fit what all the earlier ones accept at
        # once (one check per target, not per pair: a fan-out of 4,000 would cost seconds)
        accepted: TensorSpec | None = None
        for ref in targets:
            dst = port(ref, f"graph input {gin!r} target", "in")
            if dst:
                feeders[(dst[0], dst[1].name)].append(f"input {gin}")
                err = None if accepted is None else check_edge(
                    accepted, dst[1], edge=f"{gin} -> {ref}", node=dst[0])
                if err:
                    problems.append(err)
                else:
                    accepted = dst[1] if accepted is None else narrowest(accepted, dst[1])

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
