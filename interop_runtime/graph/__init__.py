"""Graphs as pure data: building one in code (builder), checking it against function
signatures (signatures, validate), compiling it into one plan per worker (compile),
pipeline files (pipeline) and drawing it (render).

The spec and plan models themselves are wire payloads (interop_runtime.wire.payloads),
because protocol/schema.json describes them; they are re-exported here.

Imports: the wire layer only. No sockets.
"""

from interop_runtime.wire.payloads import EdgeSpec, GraphSpec, NodeSpec, PlanNode, Route, WorkerPlan

__all__ = ["EdgeSpec", "GraphSpec", "NodeSpec", "PlanNode", "Route", "WorkerPlan"]
