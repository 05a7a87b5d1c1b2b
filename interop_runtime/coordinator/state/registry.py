"""The registry: workers (register, heartbeat, deregister, loss) and graphs (register,
validate, drop, compile into plans and install them)."""

from __future__ import annotations

import logging
from typing import Any

from interop_runtime.coordinator.state.base import StateTables
from interop_runtime.coordinator.state.records import (
    NAME,
    PendingOp,
    Send,
    WorkerRecord,
    error_reply,
    reply,
)
from interop_runtime.graph.compile import CompiledGraph, compile_graph
from interop_runtime.graph.validate import validate
from interop_runtime.transport.security import is_wildcard
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import (
    BadHeaderError,
    InteropError,
    UnknownTargetError,
    WorkerLostError,
)
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DeregisterMsg,
    FunctionSpec,
    GraphMsg,
    HeartbeatMsg,
    RegisterMsg,
)
from interop_runtime.wire.payloads import GraphSpec

log = logging.getLogger("interop.coordinator")


class Registry(StateTables):
    def _on_register(self, peer: bytes, msg: RegisterMsg, arrays: Any, now: float) -> list[Send]:
        if is_wildcard(msg.endpoint):
            raise BadHeaderError(f"worker {msg.name!r} announced {msg.endpoint}, which no peer can "
                                 f"dial; it must advertise a concrete address", field="endpoint")
        out: list[Send] = []
        old = self.workers.get(msg.name)
        if old and old.alive and old.identity != peer:
            out += self._worker_lost(old, "it registered again (restarted)")
        self.workers[msg.name] = WorkerRecord(
            name=msg.name, identity=peer, endpoint=msg.endpoint, plugin=msg.plugin,
            device=msg.device, functions={f.name: f for f in msg.functions}, pid=msg.pid,
            last_seen=now, info=msg.info, public_key=msg.public_key)
        self.metrics.worker_alive.labels(msg.name, msg.plugin, msg.device).set(1)
        log.info("worker %s registered (%s on %s, %d functions) at %s", msg.name, msg.plugin,
                 msg.device, len(msg.functions), msg.endpoint)
        out.append(Send(peer, reply(msg, {"name": msg.name})))
        out += self._reinstall_plans_for(msg.name, now)
        out += self._resume_waiting_runs(msg.name)
        return out

    def _on_heartbeat(self, peer: bytes, msg: HeartbeatMsg, arrays: Any, now: float) -> list[Send]:
        w = self.workers.get(msg.name)
        if w is None or not w.alive:
            return [Send(peer, error_reply(UnknownTargetError(
                f"worker {msg.name!r} is not registered here; register again", field="name",
                worker=msg.name), msg.id))]
        w.last_seen = now
        return []

    def _on_deregister(self, peer: bytes, msg: DeregisterMsg, arrays: Any, now: float) -> list[Send]:
        w = self.workers.get(msg.name)
        if w is None or w.identity != peer:
            return []
        return self._worker_lost(w, f"it deregistered ({msg.reason or 'no reason given'})")

    def _worker_lost(self, w: WorkerRecord, why: str) -> list[Send]:
        w.alive = False
        self.metrics.worker_alive.labels(w.name, w.plugin, w.device).set(0)
        log.warning("worker %s lost: %s", w.name, why)
        out: list[Send] = []
        for run in list(self.runs_by_worker.pop(w.name, ())):
            rec = self.runs.get(run)
            if rec is None:
                continue
            nodes = [n for n, wk in rec.outstanding.items() if wk == w.name]
            if not nodes:
                continue
            out += self._retry_or_fail(rec, w, nodes, why)
        for op_id in [k for k, op in self.ops.items() if op.forwarded_to == w.name]:
            op = self.ops.pop(op_id)
            out.append(Send(op.client, error_reply(
                WorkerLostError(f"worker {w.name!r} was lost ({why})", worker=w.name),
                op.client_msg)))
        return out

    def _live_functions(self) -> dict[str, dict[str, FunctionSpec]]:
        return {n: w.functions for n, w in self.workers.items() if w.alive}

    def _endpoints(self) -> dict[str, str]:
        return {n: w.endpoint for n, w in self.workers.items() if w.alive}

    def _keys(self) -> dict[str, str | None]:
        return {n: w.public_key for n, w in self.workers.items() if w.alive}

    # --- graphs -------------------------------------------------------------------------------

    def _on_graph(self, peer: bytes, msg: GraphMsg, arrays: Any, now: float) -> list[Send]:
        if msg.op == "drop":
            name = msg.graph or msg.spec.get("name")
            if not name or name not in self.graph_specs:
                raise UnknownTargetError(f"no graph named {name!r}", field="graph")
            compiled = self.graphs.pop(name, None)
            self.graph_specs.pop(name)
            self.store.drop_graph(name)
            out = [Send(peer, reply(msg, {"graph": name, "dropped": True}))]
            for worker in (compiled.plans if compiled else {}):
                w = self.workers.get(worker)
                if w and w.alive:
                    out.append(Send(w.identity, ControlMsg(v=PROTOCOL_VERSION, id=new_id(),
                                                           src=NAME, action="cancel", graph=name)))
            return out
        try:
            spec = GraphSpec.model_validate(msg.spec)
        except Exception as exc:
            raise BadHeaderError(f"graph spec is invalid: {exc}", field="spec") from None
        if msg.op == "validate":
            order = validate(spec, self._live_functions())
            return [Send(peer, reply(msg, {"graph": spec.name, "valid": True, "order": order}))]
        version = self.graph_specs.get(spec.name, (0, spec))[0] + 1
        compiled = compile_graph(spec, self._live_functions(), self._endpoints(), version,
                                     self._keys())
        self.graphs[spec.name] = compiled
        self.graph_specs[spec.name] = (version, spec)
        self.store.save_graph(spec.name, version, spec.model_dump())
        op = PendingOp(client=peer, client_msg=msg.id, deadline=now + self.request_timeout_s,
                       waiting=set(), body={"graph": spec.name, "version": version,
                                            "order": compiled.order,
                                            "workers": sorted(compiled.plans)})
        out = self._send_plans(compiled, op)
        if not op.waiting:
            return [Send(peer, reply(msg, op.body))]
        return out

    def _send_plans(self, compiled: CompiledGraph, op: PendingOp | None) -> list[Send]:
        out = []
        for worker, plan in compiled.plans.items():
            ctl = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, dst=worker, action="plan",
                             graph=compiled.spec.name, args={"plan": plan.model_dump()})
            if op is not None:
                op.waiting.add(ctl.id)
                self.ops[ctl.id] = op
            out.append(Send(self.workers[worker].identity, ctl))
        return out

    def _reinstall_plans_for(self, worker: str, now: float) -> list[Send]:
        """A worker (re)joined: recompile every graph it takes part in, where possible."""
        out: list[Send] = []
        for name, (version, spec) in self.graph_specs.items():
            if worker not in {n.worker for n in spec.nodes.values()}:
                continue
            try:
                compiled = compile_graph(spec, self._live_functions(), self._endpoints(), version,
                                     self._keys())
            except InteropError:
                continue  # some other worker is not here yet; its registration retries
            self.graphs[name] = compiled
            out += self._send_plans(compiled, None)
        return out
