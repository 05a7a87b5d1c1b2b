"""Requests: QUERY answers, CONTROL for the coordinator itself, and CONTROL/PARAM
forwarded to a worker with the worker's reply routed back to the asking client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from interop_runtime.coordinator.state.base import StateTables
from interop_runtime.coordinator.state.records import NAME, PendingOp, Send, reply
from interop_runtime.coordinator.state.timeline import timeline
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import (
    BadHeaderError,
    BusyError,
    CoordinatorRestartedError,
    RunCancelledError,
    UnauthorizedError,
    UnknownTargetError,
    UnsupportedError,
    WorkerLostError,
    make_error,
)
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DataMsg,
    ErrorMsg,
    ParamMsg,
    QueryMsg,
    ReplyMsg,
)

if TYPE_CHECKING:
    import numpy as np

# health checks and monitors: any role may ask (a worker probes itself with its own key)
OPEN_QUERIES = frozenset({"workers", "status"})
# what a client may have forwarded to a worker: the rest (plan, cancel, pause, resume,
# load, unload, shutdown) changes what the worker does for everyone, so only the
# coordinator itself sends it
FORWARDED_ACTIONS = frozenset({"invoke", "describe", "ping", "model"})


class Requests(StateTables):
    def _on_query(self, peer: bytes, msg: QueryMsg, arrays: Any, now: float) -> list[Send]:
        if msg.what not in OPEN_QUERIES:
            self.authority.require_client(self.caller_key, f"QUERY {msg.what}")
        if msg.what == "workers":
            body: dict[str, Any] = self._fitted("workers", [w.public(now)
                                                            for w in self.workers.values()])
        elif msg.what == "graphs":
            body = self._fitted("graphs", [{"name": n, "version": v, "nodes": list(s.nodes),
                                            "ready": n in self.graphs}
                                           for n, (v, s) in self.graph_specs.items()])
        elif msg.what == "runs" and msg.run:
            body = self._timeline(msg.run)
        elif msg.what == "runs":
            body = {**self._fitted("active", [{"run": r.run, "graph": r.graph,
                                               "outstanding": r.outstanding}
                                              for r in self.runs.values()]),
                    "recent": sorted([{k: v for k, v in r.items() if k != "timings"}
                                      for r in self.recent] + self.store.runs(50),
                                     key=lambda r: r["started"], reverse=True)[:50]}
        elif msg.what == "status":
            body = {"workers_alive": sum(w.alive for w in self.workers.values()),
                    "workers_dead": sum(not w.alive for w in self.workers.values()),
                    "graphs": len(self.graph_specs), "runs_active": len(self.runs),
                    "runs_ok": self.finished_ok, "runs_failed": self.finished_failed,
                    "epoch": self.epoch}
        elif msg.what == "routes":
            body = self._routes(msg.graph)
        else:
            return self._result(peer, msg)
        return [Send(peer, reply(msg, body))]

    def _timeline(self, run: str) -> dict[str, Any]:
        """One run's timeline: in flight, among the recent runs, or in the store (detached
        runs); nodes are cut to fit a header."""
        rec = self.runs.get(run)
        entry: dict[str, Any] | None = None
        if rec is not None:
            entry = {"run": rec.run, "graph": rec.graph, "state": "running",
                     "started": rec.started_unix_us / 1e6, "timings": rec.timings}
        if entry is None:
            entry = next((r for r in reversed(self.recent) if r["run"] == run), None)
        if entry is None:
            entry = self.store.run_record(run)
        if entry is None:
            raise UnknownTargetError(f"no run {run!r} is known here (the coordinator keeps "
                                     f"the last {self.recent.maxlen} runs, and detached ones)",
                                     field="run")
        graph = self.graph_specs.get(entry.get("graph") or "")
        body = timeline(entry, graph[1] if graph else None)
        fitted = self._fitted("nodes", list(body["nodes"].items()))
        body["nodes"] = dict(fitted["nodes"])
        if "truncated" in fitted:
            body["truncated"] = fitted["truncated"]
        return {"timeline": body}

    def _routes(self, graph: str | None) -> dict[str, Any]:
        """Where a client sends a direct run's inputs and who sends back its outputs (SPEC
        section 16); ``direct`` false with ``why`` when the graph must go through us."""
        compiled = self.graphs.get(graph or "")
        if compiled is None:
            raise UnknownTargetError(f"no graph named {graph!r} is ready", field="graph")

        def worker(name: str) -> dict[str, Any]:
            w = self.workers[name]
            return {"worker": name, "endpoint": w.endpoint, "public_key": w.public_key,
                    "host": w.host}
        why = compiled.direct_refusal()
        if why is not None:
            return {"graph": compiled.spec.name, "version": compiled.version, "direct": False,
                    "why": why, "epoch": self.epoch}
        return {"graph": compiled.spec.name, "version": compiled.version, "direct": True,
                "epoch": self.epoch, "routes_id": compiled.routes_id,
                "inputs": {gin: [{**worker(w), "node": node, "input": inp,
                                  "pool": compiled.spec.nodes[node].pool}
                                 for w, node, inp in routes]
                           for gin, routes in compiled.input_routes.items()},
                "input_specs": {gin: spec.model_dump(exclude_none=True)
                                for gin, spec in compiled.input_specs.items()},
                "outputs": {gout: worker(w) for gout, w in compiled.output_workers.items()},
                # replica pools (SPEC section 19): the client places each run itself
                "pools": compiled.pool_view().to_wire(),
                "replicas": {w: worker(w) for ws in compiled.members.values() for w in ws},
                "fixed": compiled.fixed()}

    def _fitted(self, key: str, items: list[Any]) -> dict[str, Any]:
        """``{key: items}``, cut so that the answer fits in a header; ``truncated`` counts
        what was left out."""
        budget, kept = self.limits.max_reply_bytes, list[Any]()
        for item in items:
            budget -= len(msgpack.packb(item))
            if budget < 0:
                return {key: kept, "truncated": len(items) - len(kept)}
            kept.append(item)
        return {key: kept}

    def _result(self, peer: bytes, msg: QueryMsg) -> list[Send]:
        """A detached run's outputs, once, for the client that started it."""
        if not msg.run:
            raise BadHeaderError("query result needs a run id", field="run")
        unknown = UnknownTargetError(f"no uncollected result for run {msg.run!r}", field="run")
        rec = self.runs.get(msg.run)
        if rec is not None:
            if rec.owner != self.caller_key:
                raise unknown  # another client's run: as if it did not exist
            raise BusyError(f"run {msg.run} is still running", field="run")
        if self.store.run_owned_by_other(msg.run, self.caller_key):
            raise unknown
        result = self.store.take_result(msg.run)
        if result is not None:
            return [Send(peer, reply(msg, {"run": msg.run}), result)]
        state = self.store.run_state(msg.run)
        restarted = state == "interrupted" or (
            msg.epoch is not None and msg.epoch != self.epoch and state in (None, "running"))
        if restarted:
            raise CoordinatorRestartedError(
                f"the coordinator restarted while run {msg.run} was in flight; its result is "
                f"lost (epoch {msg.epoch or 'unknown'} -> {self.epoch})", field="run")
        if state in ("failed", "cancelled"):
            err = self.store.run_error(msg.run) or {}
            code = err.pop("code", "cancelled")
            message = err.pop("message", f"run {msg.run} was {state}")
            raise make_error(code, message, **{k: err.get(k) for k in
                                               ("field", "node", "edge", "worker")})
        raise unknown

    def _forward(self, peer: bytes, msg: ControlMsg | ParamMsg, arrays: dict[str, np.ndarray],
                 now: float) -> list[Send]:
        w = self.workers.get(msg.dst or "")
        if w is None:
            raise UnknownTargetError(f"no worker named {msg.dst!r}", field="dst", worker=msg.dst)
        if not w.alive:
            raise WorkerLostError(f"worker {w.name!r} is not alive", worker=w.name)
        self._check_requests(peer)
        fwd = msg.model_copy(update={"id": new_id()})
        wait = msg.timeout_s or self.request_timeout_s  # the client's own patience
        self.ops[fwd.id] = PendingOp(client=peer, client_msg=msg.id, waiting={fwd.id},
                                     deadline=now + wait, forwarded_to=w.name,
                                     responders={fwd.id: w.identity})
        return [Send(w.identity, fwd, arrays)]

    def _on_control(self, peer: bytes, msg: ControlMsg, arrays: dict[str, np.ndarray], now: float
                    ) -> list[Send]:
        if msg.dst in (None, "", NAME) and msg.action == "ping":  # open to every role
            return [Send(peer, reply(msg, {"name": NAME, "epoch": self.epoch}))]
        self.authority.require_client(self.caller_key, f"CONTROL {msg.action}")
        if msg.dst in (None, "", NAME):
            if msg.action == "cancel" and msg.run:
                rec = self.runs.get(msg.run)
                if rec is None or rec.owner != self.caller_key:
                    raise UnknownTargetError(f"no run {msg.run!r} of yours in flight", field="run")
                out = self._fail_run(rec, RunCancelledError(f"run {msg.run} was cancelled"))
                return [*out, Send(peer, reply(msg, {"run": msg.run, "cancelled": True}))]
            if msg.action == "cancel":
                raise UnsupportedError("cancel at the coordinator needs a run", field="run")
            if msg.action == "drain":
                return self._on_drain(peer, msg, now)
            raise UnsupportedError(f"the coordinator does not do {msg.action!r}; name a worker "
                                   f"in dst", field="action")
        if msg.action not in FORWARDED_ACTIONS:
            raise UnauthorizedError(f"only the coordinator may send {msg.action!r} to a worker",
                                    field="action")
        return self._forward(peer, msg, arrays, now)

    def _on_param(self, peer: bytes, msg: ParamMsg, arrays: dict[str, np.ndarray], now: float
                  ) -> list[Send]:
        self.authority.require_client(self.caller_key, f"PARAM {msg.op}")
        return self._forward(peer, msg, arrays, now)

    def _on_reply(self, peer: bytes, msg: ReplyMsg | ErrorMsg, arrays: dict[str, np.ndarray],
                  now: float) -> list[Send]:
        staged = self._on_staged_ack(peer, msg)
        if staged is not None:
            return staged
        op = self.ops.get(msg.reply_to or "")
        if op is None:  # a late answer (to a cancel, say) or a guessed id: dropped, counted
            self.metrics.bad_messages.labels("stale_reply").inc()
            return []
        if op.responders.get(msg.reply_to or "") != peer:
            # a guessed (or replayed) id from a connection we did not ask: dropped, counted
            self.metrics.bad_messages.labels("unauthorized").inc()
            return []
        del self.ops[msg.reply_to or ""]
        if op.forwarded_to is not None:
            back = msg.model_copy(update={"id": new_id(), "reply_to": op.client_msg})
            send = Send(op.client, back, arrays)
            return [] if self.park_reply(op.forwarded_to, send) else [send]
        if isinstance(msg, ErrorMsg):
            for k in [k for k, o in self.ops.items() if o is op]:
                del self.ops[k]
            return [Send(op.client, msg.model_copy(update={"id": new_id(),
                                                           "reply_to": op.client_msg}))]
        op.waiting.discard(msg.reply_to or "")
        if op.waiting:
            return []
        return [Send(op.client, ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME,
                                         reply_to=op.client_msg, body=op.body))]

    def _on_data(self, peer: bytes, msg: DataMsg, arrays: Any, now: float) -> list[Send]:
        raise UnsupportedError("send DATA to a worker's inbox, or RUN a graph here", field="kind")
