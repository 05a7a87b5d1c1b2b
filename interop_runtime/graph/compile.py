"""Compilation of a valid graph into one plan per worker, so that a run costs only the
messages that carry its tensors (set-up happens once, at registration)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from interop_runtime.graph.placement import PoolView
from interop_runtime.graph.validate import Pools, validate
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import UnknownTargetError
from interop_runtime.wire.messages import FunctionSpec, TensorSpec
from interop_runtime.wire.payloads import (
    Feeder,
    GraphSpec,
    PlanNode,
    Route,
    WorkerPlan,
    split_port,
)


@dataclass
class CompiledGraph:
    """What the coordinator keeps per registered graph."""

    spec: GraphSpec
    version: int
    order: list[str]  # topological
    input_routes: dict[str, list[tuple[str, str, str]]]  # graph input -> [(worker, node, input)]
    input_specs: dict[str, TensorSpec]
    source_nodes: list[str]  # nodes with no inputs at all: triggered by an empty DATA
    plans: dict[str, WorkerPlan]  # worker -> plan
    output_workers: dict[str, str] = field(default_factory=dict)  # graph output -> the worker that produces it
    # pool nodes -> the replicas a run may be placed on (live, not draining), and every
    # replica their routes list (draining ones too, so that runs placed there finish)
    replicas: dict[str, list[str]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    # changes with every compilation (a worker's new endpoint, a new key): a direct RUN
    # names the routes its client used, and stale ones are refused
    routes_id: str = field(default_factory=new_id)

    def direct_refusal(self) -> str | None:
        """Why a client may not run this graph directly (None: it may). Source nodes need the
        coordinator's trigger, and retried nodes need the inputs it keeps."""
        if self.source_nodes:
            return f"node {self.source_nodes[0]!r} has no inputs: the coordinator triggers it"
        retried = [n for n, s in self.spec.nodes.items() if s.retries]
        if retried:
            return f"node {retried[0]!r} is retried: the coordinator keeps the run's inputs"
        return None

    def workers_of(self, node: str) -> list[str]:
        """Every worker that may run ``node``: its own, or its pool's replicas."""
        return self.members.get(node) or [self.spec.nodes[node].worker]

    def all_workers(self) -> set[str]:
        return {w for n in self.spec.nodes for w in self.workers_of(n)}

    def fixed_workers(self) -> set[str]:
        return {s.worker for s in self.spec.nodes.values() if s.worker}

    def fixed(self) -> dict[str, str]:
        """Node -> worker, for the nodes that name one."""
        return {n: s.worker for n, s in self.spec.nodes.items() if s.worker}

    def pool_view(self) -> PoolView:
        view = PoolView(order=[n for n in self.order if n in self.replicas],
                        replicas={n: list(ws) for n, ws in self.replicas.items()})
        for node in view.order:
            feeding = [e.src.partition(".")[0] for e in self.spec.edges
                       if e.dst.partition(".")[0] == node]
            view.upstream[node] = feeding[0] if feeding else None
        return view

    def placement(self, place: Mapping[str, str]) -> dict[str, str]:
        """Node -> worker for a run: its own worker, or the replica ``place`` names."""
        return {n: s.worker or place[n] for n, s in self.spec.nodes.items()}


def compile_graph(spec: GraphSpec, functions: Mapping[str, Mapping[str, FunctionSpec]],
                  endpoints: Mapping[str, str], version: int,
                  keys: Mapping[str, str | None] | None = None,
                  hosts: Mapping[str, str | None] | None = None,
                  pools: Pools | None = None, draining: Collection[str] = ()) -> CompiledGraph:
    """Validate and turn the graph into one plan per worker. A pool node's plan goes to
    every replica, and routes into it list them all: which one runs it is each run's
    placement, so routing to a replica never compiles anything again."""
    order = validate(spec, functions, pools)
    members = {n: sorted((pools or {})[s.pool]) for n, s in spec.nodes.items() if s.pool}
    replicas = {n: [w for w in ws if w not in draining] for n, ws in members.items()}
    for node, ws in replicas.items():
        if not ws:
            raise UnknownTargetError(f"node {node!r}: every replica of pool "
                                     f"{spec.nodes[node].pool!r} is draining", node=node,
                                     field="pool")

    def workers_of(node: str) -> list[str]:
        return members.get(node) or [spec.nodes[node].worker]

    plan_nodes: dict[str, PlanNode] = {}
    for name in order:
        node_spec = spec.nodes[name]
        fn = functions[workers_of(name)[0]][node_spec.function]
        plan_nodes[name] = PlanNode(node=name, function=node_spec.function, args=node_spec.args,
                                    inputs=[p.name for p in fn.inputs])
    for edge in spec.edges:
        src_node, out = split_port(edge.src, what="edge")
        dst_node, inp = split_port(edge.dst, what="edge")
        for worker in workers_of(dst_node):
            plan_nodes[src_node].routes.setdefault(out, []).append(
                Route(worker=worker, endpoint=endpoints[worker], node=dst_node, input=inp,
                      public_key=(keys or {}).get(worker), host=(hosts or {}).get(worker),
                      pool=spec.nodes[dst_node].pool))
        for producer in workers_of(src_node):
            plan_nodes[dst_node].feeders.setdefault(inp, []).append(
                Feeder(worker=producer, public_key=(keys or {}).get(producer)))
    for gout, ref in spec.outputs.items():
        src_node, out = split_port(ref, what="output")
        plan_nodes[src_node].graph_outputs.setdefault(out, []).append(gout)

    input_routes: dict[str, list[tuple[str, str, str]]] = {}
    input_specs: dict[str, TensorSpec] = {}
    for gin, targets in spec.inputs.items():
        input_routes[gin] = []
        for ref in targets:
            node, inp = split_port(ref, what="input")
            for worker in workers_of(node):
                input_routes[gin].append((worker, node, inp))
            plan_nodes[node].client_inputs.append(inp)
            fn = functions[workers_of(node)[0]][spec.nodes[node].function]
            input_specs.setdefault(gin, next(p for p in fn.inputs if p.name == inp))
    plans: dict[str, WorkerPlan] = {}
    for name in order:
        for worker in workers_of(name):
            plans.setdefault(worker, WorkerPlan(graph=spec.name, version=version, worker=worker,
                                                nodes=[])).nodes.append(plan_nodes[name])
    sources = [n for n in order if not plan_nodes[n].inputs]
    output_workers = {g: workers_of(split_port(ref, what="output")[0])[0]
                      for g, ref in spec.outputs.items()}
    return CompiledGraph(spec=spec, version=version, order=order, input_routes=input_routes,
                         input_specs=input_specs, source_nodes=sources, plans=plans,
                         output_workers=output_workers, replicas=replicas, members=members)
