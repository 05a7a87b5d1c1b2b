"""What a client asks of the coordinator about the cluster, and of one worker directly
through it: the read-only queries and the single-worker calls, over ``Client.request``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from interop_runtime.client.results import Params, RunResult
from interop_runtime.graph.builder import Graph
from interop_runtime.wire.codec import Envelope, new_id
from interop_runtime.wire.errors import make_error
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    GraphMsg,
    Header,
    ParamMsg,
    QueryMsg,
    RunMsg,
)
from interop_runtime.wire.payloads import GraphSpec


def as_spec(graph: Graph | GraphSpec | Mapping[str, Any]) -> GraphSpec:
    if isinstance(graph, Graph):
        return graph.spec()
    if isinstance(graph, GraphSpec):
        return graph
    return GraphSpec.model_validate(graph)


class Queries:
    _registered: dict[str, str]  # graph name -> spec json, to skip re-registering
    _routes: dict[str, Any]  # graph name -> direct routes
    _detached: dict[str, str]  # detached run -> the epoch it started under

    def request(self, msg: Header, arrays: Mapping[str, Any] | None = None,
                timeout_s: float | None = None) -> Envelope:
        raise NotImplementedError

    def _hdr(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "id": new_id(), "src": "client"}

    # --- graphs ---------------------------------------------------------------------------------

    def register(self, graph: Graph | GraphSpec | Mapping[str, Any]) -> dict[str, Any]:
        """Validate, compile and install a graph on its workers."""
        spec = as_spec(graph)
        self._routes.pop(spec.name, None)
        body = self.request(GraphMsg(**self._hdr(), op="register", spec=spec.model_dump())).msg.body
        self._registered[spec.name] = spec.model_dump_json()
        return body

    def drop(self, name: str) -> None:
        self._routes.pop(name, None)
        self.request(GraphMsg(**self._hdr(), op="drop", graph=name))
        self._registered.pop(name, None)

    def _graph_name(self, graph: str | Graph | GraphSpec | Mapping[str, Any]) -> str:
        if isinstance(graph, str):
            return graph
        spec = as_spec(graph)
        if self._registered.get(spec.name) != spec.model_dump_json():
            self.register(spec)
        return spec.name

    # --- detached runs --------------------------------------------------------------------------

    def start(self, graph: str | Graph | GraphSpec | Mapping[str, Any], inputs: Mapping[str, Any],
              *, timeout_s: float | None = None) -> str:
        """Start a detached run; collect it later with result(run_id)."""
        name = self._graph_name(graph)
        msg = RunMsg(**self._hdr(), graph=name, run=new_id(), timeout_s=timeout_s, detach=True)
        body = self.request(msg, inputs).msg.body
        if isinstance(body.get("epoch"), str) and len(self._detached) < 10_000:
            self._detached[body["run"]] = body["epoch"]
        return body["run"]

    def result(self, run_id: str) -> RunResult:
        """Collect a detached (or undelivered) run's outputs; each result is collected once."""
        env = self.request(QueryMsg(**self._hdr(), what="result", run=run_id,
                                    epoch=self._detached.get(run_id)))
        self._detached.pop(run_id, None)
        return RunResult(env.arrays, env.msg.body)

    def cancel(self, run_id: str) -> None:
        self.request(ControlMsg(**self._hdr(), action="cancel", run=run_id))

    # --- the coordinator ------------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """Registered workers: name, plugin, device, endpoint, alive, functions."""
        return self.request(QueryMsg(**self._hdr(), what="workers")).msg.body["workers"]

    def functions(self, worker: str) -> dict[str, dict[str, Any]]:
        for w in self.workers():
            if w["name"] == worker:
                return {f["name"]: f for f in w["functions"]}
        raise make_error("unknown_target", f"no worker named {worker!r}", worker=worker)

    def status(self) -> dict[str, Any]:
        return self.request(QueryMsg(**self._hdr(), what="status")).msg.body

    def graphs(self) -> list[dict[str, Any]]:
        return self.request(QueryMsg(**self._hdr(), what="graphs")).msg.body["graphs"]

    def runs(self) -> dict[str, Any]:
        return self.request(QueryMsg(**self._hdr(), what="runs")).msg.body

    def validate(self, graph: Graph | GraphSpec | Mapping[str, Any]) -> list[str]:
        """Check a graph against the live workers; returns its topological order."""
        spec = as_spec(graph)
        msg = GraphMsg(**self._hdr(), op="validate", spec=spec.model_dump())
        return self.request(msg).msg.body["order"]

    # --- one worker ----------------------------------------------------------------------------

    def call(self, worker: str, function: str, inputs: Mapping[str, Any] | None = None,
             *, timeout_s: float | None = None, **args: Any) -> dict[str, np.ndarray]:
        """Invoke one function on one worker (CONTROL invoke) and return its outputs."""
        msg = ControlMsg(**self._hdr(), dst=worker, action="invoke", function=function, args=args,
                         timeout_s=timeout_s or self.timeout_s)
        return dict(self.request(msg, inputs or {}, timeout_s).arrays)

    def control(self, worker: str, action: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("timeout_s", self.timeout_s)  # the coordinator waits as long as we do
        msg = ControlMsg(**self._hdr(), dst=worker, action=action, **kwargs)
        return self.request(msg, timeout_s=kwargs["timeout_s"]).msg.body

    def drain(self, worker: str) -> dict[str, Any]:
        """Stop placing runs on replica ``worker``; the coordinator shuts it down once its
        runs are done (SPEC section 19)."""
        return self.control("coordinator", "drain", args={"worker": worker})

    def model_graph(self, worker: str) -> dict[str, Any]:
        """The worker's model as a framework-neutral graph (CONTROL model)."""
        return self.control(worker, "model")["graph"]

    def list_params(self, worker: str) -> dict[str, Any]:
        return self.request(ParamMsg(**self._hdr(), timeout_s=self.timeout_s, dst=worker, op="list")).msg.body

    def get_params(self, worker: str, names: Sequence[str] | None = None) -> Params:
        env = self.request(ParamMsg(**self._hdr(), timeout_s=self.timeout_s, dst=worker, op="get",
                                    names=list(names) if names is not None else None))
        return Params(env.arrays, env.msg.body.get("version", 0))

    def set_params(self, worker: str, params: Mapping[str, Any], *,
                   expected_version: int | None = None) -> int:
        """Write parameters; returns the worker's new parameter version."""
        msg = ParamMsg(**self._hdr(), timeout_s=self.timeout_s, dst=worker, op="set", version=expected_version)
        return self.request(msg, params).msg.body["version"]
