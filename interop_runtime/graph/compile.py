"""Compilation of a valid graph into one plan per worker, so that a run costs only the
messages that carry its tensors (set-up happens once, at registration)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from interop_runtime.graph.validate import validate
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.messages import FunctionSpec, TensorSpec
from interop_runtime.wire.payloads import (
    Feeder,
    GraphSpec,
    PlanNode,
    Route,
    WorkerPlan,
    split_port,
)


class CompiledGraph(BaseModel):
    """What the coordinator keeps per registered graph."""

    spec: GraphSpec
    version: int
    order: list[str]  # topological
    input_routes: dict[str, list[tuple[str, str, str]]]  # graph input -> [(worker, node, input)]
    input_specs: dict[str, TensorSpec]
    source_nodes: list[str]  # nodes with no inputs at all: triggered by an empty DATA
    plans: dict[str, WorkerPlan]  # worker -> plan
    output_workers: dict[str, str] = {}  # graph output -> the worker that produces it
    # changes with every compilation (a worker's new endpoint, a new key): a direct RUN
    # names the routes its client used, and stale ones are refused
    routes_id: str = Field(default_factory=new_id)

    def direct_refusal(self) -> str | None:
        """Why a client may not run this graph directly (None: it may). Source nodes need the
        coordinator's trigger, and retried nodes need the inputs it keeps."""
        if self.source_nodes:
            return f"node {self.source_nodes[0]!r} has no inputs: the coordinator triggers it"
        retried = [n for n, s in self.spec.nodes.items() if s.retries]
        if retried:
            return f"node {retried[0]!r} is retried: the coordinator keeps the run's inputs"
        return None


def compile_graph(spec: GraphSpec, functions: Mapping[str, Mapping[str, FunctionSpec]],
                  endpoints: Mapping[str, str], version: int,
                  keys: Mapping[str, str | None] | None = None,
                  hosts: Mapping[str, str | None] | None = None) -> CompiledGraph:
    """Validate and turn the graph into one plan per worker."""
    order = validate(spec, functions)
    plan_nodes: dict[str, PlanNode] = {}
    for name in order:
        node_spec = spec.nodes[name]
        fn = functions[node_spec.worker][node_spec.function]
        plan_nodes[name] = PlanNode(node=name, function=node_spec.function, args=node_spec.args,
                                    inputs=[p.name for p in fn.inputs])
    for edge in spec.edges:
        src_node, out = split_port(edge.src, what="edge")
        dst_node, inp = split_port(edge.dst, what="edge")
        worker = spec.nodes[dst_node].worker
        plan_nodes[src_node].routes.setdefault(out, []).append(
            Route(worker=worker, endpoint=endpoints[worker], node=dst_node, input=inp,
                  public_key=(keys or {}).get(worker), host=(hosts or {}).get(worker)))
        producer = spec.nodes[src_node].worker
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
            worker = spec.nodes[node].worker
            input_routes[gin].append((worker, node, inp))
            plan_nodes[node].client_inputs.append(inp)
            fn = functions[worker][spec.nodes[node].function]
            input_specs.setdefault(gin, next(p for p in fn.inputs if p.name == inp))
    plans: dict[str, WorkerPlan] = {}
    for name in order:
        worker = spec.nodes[name].worker
        plans.setdefault(worker, WorkerPlan(graph=spec.name, version=version, worker=worker,
                                            nodes=[])).nodes.append(plan_nodes[name])
    sources = [n for n in order if not plan_nodes[n].inputs]
    output_workers = {g: spec.nodes[split_port(ref, what="output")[0]].worker
                      for g, ref in spec.outputs.items()}
    return CompiledGraph(spec=spec, version=version, order=order, input_routes=input_routes,
                         input_specs=input_specs, source_nodes=sources, plans=plans,
                         output_workers=output_workers)
