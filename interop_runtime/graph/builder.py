"""``Graph``: build a GraphSpec in code instead of YAML."""

from __future__ import annotations

from typing import Any

from interop_runtime.wire.payloads import EdgeSpec, GraphSpec, NodeSpec


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

    def pool_node(self, name: str, pool: str, function: str, *, retries: int = 0, **args: Any
                  ) -> Graph:
        """Add a node that runs on any replica of ``pool`` (each run is placed on one)."""
        self._nodes[name] = NodeSpec(pool=pool, function=function, args=args, retries=retries)
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
