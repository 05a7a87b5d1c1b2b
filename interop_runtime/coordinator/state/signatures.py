"""Function tables that change while a worker runs, and the graphs that depend on them.

A worker that loads, replaces or unloads a model sends its whole new function table
(``CONTROL functions``, SPEC section 9.4); only that worker's own registration connection
(and, under CURVE, its key) may. The table is replaced in one step, then every graph that
uses the worker is checked again: one that still fits gets its plans reinstalled, one that
no longer fits is *invalid* (the edge at fault named), its plans are dropped from the
workers and its runs are refused with ``graph_invalid`` until a later change makes it fit.

Clients ask the coordinator (no ``dst``, ``args.worker`` naming the worker) to ``load`` or
``unload`` a model; the coordinator sends the worker its own request. The configs name files
only, and the worker refuses anything that names code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from interop_runtime.coordinator.state.base import StateTables
from interop_runtime.coordinator.state.records import NAME, Send, reply
from interop_runtime.coordinator.state.registry import check_batching
from interop_runtime.graph.validate import validate
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import (
    BadHeaderError,
    GraphInvalidError,
    InteropError,
    UnauthorizedError,
    UnknownTargetError,
)
from interop_runtime.wire.messages import (
    MAX_FUNCTIONS,
    PROTOCOL_VERSION,
    ControlMsg,
    FunctionSpec,
    QueryMsg,
    ReplyMsg,
    RunMsg,
)
from interop_runtime.wire.payloads import GraphSpec

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("interop.coordinator")

MODEL_ACTIONS = frozenset({"load", "unload"})  # forwarded for clients


def _waits_for_a_worker(exc: InteropError) -> bool:
    """A graph that names a worker or pool not here is waiting, not invalid."""
    problems = [exc, *getattr(exc, "others", [])]
    return any(isinstance(p, UnknownTargetError) and p.field in ("worker", "pool")
               for p in problems)


class Signatures(StateTables):
    invalid_graphs: dict[str, GraphInvalidError]  # graph -> why it no longer fits

    if TYPE_CHECKING:  # implemented by the registry, the runs and the requests
        def _pools(self) -> dict[str, list[str]]: ...
        def _live_functions(self) -> dict[str, dict[str, FunctionSpec]]: ...
        def _forward(self, peer: bytes, msg: ControlMsg, arrays: dict[str, np.ndarray],
                     now: float) -> list[Send]: ...
        def _on_control(self, peer: bytes, msg: ControlMsg, arrays: dict[str, np.ndarray],
                        now: float) -> list[Send]: ...
        def _on_run(self, peer: bytes, msg: RunMsg, arrays: dict[str, np.ndarray],
                    now: float) -> list[Send]: ...
        def _on_query(self, peer: bytes, msg: QueryMsg, arrays: Any, now: float
                      ) -> list[Send]: ...

    # --- handlers in front of the requests' and the runs' -----------------------------------

    def _on_control_models(self, peer: bytes, msg: ControlMsg, arrays: dict[str, np.ndarray],
                           now: float) -> list[Send]:
        if msg.action == "functions":
            return self._on_functions(peer, msg, now)
        if msg.action in MODEL_ACTIONS and msg.dst in (None, "", NAME):
            # a client asks us; we send the worker our own load/unload (a client's load or
            # unload addressed to a worker stays refused: SPEC section 13.3)
            self.authority.require_client(self.caller_key, f"CONTROL {msg.action}")
            worker = msg.args.get("worker")
            if not isinstance(worker, str) or not worker:
                raise BadHeaderError(f"CONTROL {msg.action} at the coordinator needs "
                                     f"args.worker", field="args.worker")
            args = {k: v for k, v in msg.args.items() if k != "worker"}
            return self._forward(peer, msg.model_copy(update={"dst": worker, "src": NAME,
                                                              "args": args}), arrays, now)
        return self._on_control(peer, msg, arrays, now)

    def _on_run_checked(self, peer: bytes, msg: RunMsg, arrays: dict[str, np.ndarray],
                        now: float) -> list[Send]:
        self.authority.require_client(self.caller_key, "RUN")
        self._refuse_invalid(msg.graph)
        return self._on_run(peer, msg, arrays, now)

    def _on_query_checked(self, peer: bytes, msg: QueryMsg, arrays: Any, now: float
                          ) -> list[Send]:
        if msg.what == "routes":
            self.authority.require_client(self.caller_key, "QUERY routes")
            self._refuse_invalid(msg.graph or "")
        out = self._on_query(peer, msg, arrays, now)
        if msg.what == "graphs" and self.invalid_graphs:  # say why a graph is not ready
            for send in out:
                if isinstance(send.msg, ReplyMsg):
                    for g in send.msg.body.get("graphs", []):
                        err = self._invalid(g.get("name", ""))
                        if err is not None:
                            g["invalid"] = {"message": err.message, **err.details()}
        return out

    def _invalid(self, graph: str) -> GraphInvalidError | None:
        # a graph registered again since (and compiled) is valid whatever we noted before
        return None if graph in self.graphs else self.invalid_graphs.get(graph)

    def _refuse_invalid(self, graph: str) -> None:
        err = self._invalid(graph)
        if err is not None:
            raise GraphInvalidError(err.message, field=err.field, node=err.node, edge=err.edge,
                                    worker=err.worker)

    # --- a worker's new function table -----------------------------------------------------

    def _on_functions(self, peer: bytes, msg: ControlMsg, now: float) -> list[Send]:
        name = msg.src or ""
        w = self.workers.get(name)
        if w is None or not w.alive:
            raise UnknownTargetError(f"worker {name!r} is not registered here; register again",
                                     field="name", worker=name)
        self.authority.require_worker(self.caller_key, name)
        if w.identity != peer or (w.key is not None and self.caller_key != w.key):
            raise UnauthorizedError(f"only worker {name!r}'s own connection may change its "
                                    f"functions", field="src", worker=name)
        raw = msg.args.get("functions")
        if not isinstance(raw, list) or len(raw) > MAX_FUNCTIONS:
            raise BadHeaderError(f"args.functions must be a list of at most {MAX_FUNCTIONS} "
                                 f"function specs", field="args.functions")
        try:
            specs = msgspec.convert(raw, list[FunctionSpec], strict=True)
        except msgspec.ValidationError as exc:
            raise BadHeaderError(f"args.functions: {str(exc)[:300]}",
                                 field="args.functions") from None
        check_batching(specs, name, "args.functions")
        w.functions = {f.name: f for f in specs}  # one step: no half-updated table
        log.info("worker %s now offers %d functions", name, len(specs))
        out = self._reinstall_plans_for(name, now)
        invalid, valid = self._recheck_graphs(name)
        out += self._drop_plans(invalid)
        return [Send(peer, reply(msg, {"functions": len(specs), "invalid": invalid,
                                       "valid": valid})), *out]

    def _recheck_graphs(self, worker: str) -> tuple[list[str], list[str]]:
        """Check every graph that uses ``worker`` against the live functions: the graphs now
        invalid, and those that fit again."""
        for gone in [g for g in self.invalid_graphs if g not in self.graph_specs]:
            del self.invalid_graphs[gone]  # dropped since: bounded by the graphs
        w = self.workers.get(worker)
        pool = w.pool if w else None
        invalid, valid = [], []
        for name, (_version, spec) in self.graph_specs.items():
            if not _uses(spec, worker, pool):
                continue
            try:
                validate(spec, self._live_functions(), self._pools())
            except InteropError as exc:
                if not _waits_for_a_worker(exc):
                    self._mark_invalid(name, exc, worker)
                    invalid.append(name)
                continue
            if self.invalid_graphs.pop(name, None) is not None:
                log.info("graph %s fits worker %s again; its plans are reinstalled", name,
                         worker)
                valid.append(name)
        return invalid, valid

    def _mark_invalid(self, graph: str, exc: InteropError, worker: str) -> None:
        err = GraphInvalidError(f"graph {graph!r} no longer fits the functions of worker "
                                f"{worker!r}: {exc.message}", field=exc.field, node=exc.node,
                                edge=exc.edge, worker=worker)
        self.invalid_graphs[graph] = err
        log.warning("%s", err.message, extra={"code": err.code.value, "graph": graph,
                                             "worker": worker})

    def _drop_plans(self, graphs: list[str]) -> list[Send]:
        """Invalid graphs leave the ready table and their workers' plans."""
        out = []
        for graph in graphs:
            compiled = self.graphs.pop(graph, None)
            for worker in (compiled.plans if compiled else {}):
                w = self.workers.get(worker)
                if w and w.alive:
                    out.append(Send(w.identity, ControlMsg(v=PROTOCOL_VERSION, id=new_id(),
                                                           src=NAME, action="cancel",
                                                           graph=graph)))
        return out

    def _after_register(self, worker: str) -> list[Send]:
        """A worker (re)registered, maybe with other functions than before."""
        invalid, _ = self._recheck_graphs(worker)
        return self._drop_plans(invalid)


def _uses(spec: GraphSpec, worker: str, pool: str | None) -> bool:
    return any(n.worker == worker or (pool is not None and n.pool == pool)
               for n in spec.nodes.values())
