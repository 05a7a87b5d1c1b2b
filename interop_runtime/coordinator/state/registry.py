"""The registry: workers (register, heartbeat, deregister, loss) and graphs (register,
validate, drop, compile into plans and install them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from interop_runtime.coordinator.state.base import StateTables
from interop_runtime.coordinator.state.records import (
    NAME,
    PendingOp,
    Send,
    WorkerRecord,
    error_reply,
    plan_msg,
    reply,
)
from interop_runtime.graph.compile import CompiledGraph, compile_graph
from interop_runtime.graph.signatures import batch_dim_problem
from interop_runtime.graph.validate import validate
from interop_runtime.transport.security import is_wildcard
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import (
    BadHeaderError,
    BusyError,
    UnauthorizedError,
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


def check_batching(functions: Iterable[FunctionSpec], worker: str, field: str) -> None:
    """A batched function's signature must leave room for batches (REGISTER and CONTROL
    functions alike)."""
    for f in functions:
        problem = batch_dim_problem(f, f.batching.dim) if f.batching else None
        if problem:
            raise BadHeaderError(f"worker {worker!r}: function {f.name!r} declares batching "
                                 f"but {problem}", field=field, worker=worker)


class Registry(StateTables):
    def _on_register(self, peer: bytes, msg: RegisterMsg, arrays: Any, now: float) -> list[Send]:
        self.authority.require_worker(self.caller_key, msg.name)
        self.authority.require_pool(self.caller_key, msg.name, msg.pool)
        if is_wildcard(msg.endpoint):
            raise BadHeaderError(f"worker {msg.name!r} announced {msg.endpoint}, which no peer can "
                                 f"dial; it must advertise a concrete address", field="endpoint")
        check_batching(msg.functions, msg.name, "functions")
        old = self.workers.get(msg.name)
        if old and old.alive and old.identity != peer:
            # the name is held by a live connection: a restarted worker waits until the old
            # one misses its heartbeats; a rogue never takes the name over
            raise BusyError(f"worker {msg.name!r} is registered from another live connection; "
                            f"retry after it is declared lost ({self.dead_after_s:.1f}s without "
                            f"heartbeats)", field="name", worker=msg.name)
        if old is None and len(self.workers) >= self.limits.max_workers:
            self._prune_dead(now, force=True)
            if len(self.workers) >= self.limits.max_workers:
                raise BusyError(f"{len(self.workers)} workers are registered, the most this "
                                f"coordinator keeps", field="name", worker=msg.name)
        record = WorkerRecord(
            name=msg.name, identity=peer, endpoint=msg.endpoint, plugin=msg.plugin,
            device=msg.device, functions={f.name: f for f in msg.functions}, pid=msg.pid,
            last_seen=now, info=msg.info, public_key=msg.public_key, key=self.caller_key,
            host=msg.host, pool=msg.pool,
            session=old.session if old and old.alive else new_id())
        self.workers[msg.name] = record
        self.metrics.worker_alive.labels(msg.name, msg.plugin, msg.device).set(1)
        log.info("worker %s registered (%s on %s, %d functions) at %s", msg.name, msg.plugin,
                 msg.device, len(msg.functions), msg.endpoint)
        out = [Send(peer, reply(msg, {"name": msg.name, "session": record.session,
                                      "heartbeat_s": self.heartbeat_s,
                                      "dead_after_s": self.dead_after_s, "epoch": self.epoch}))]
        out += self._reinstall_plans_for(msg.name, now)  # a new replica: its pool's graphs too
        out += self._after_register(msg.name)  # other functions than before: graphs rechecked
        out += self._resume_waiting_runs(msg.name)
        return out

    def _on_heartbeat(self, peer: bytes, msg: HeartbeatMsg, arrays: Any, now: float) -> list[Send]:
        w = self.workers.get(msg.name)
        if w is None or not w.alive:
            return [Send(peer, error_reply(UnknownTargetError(
                f"worker {msg.name!r} is not registered here; register again", field="name",
                worker=msg.name), msg.id))]
        if msg.session != w.session or (w.key is not None and self.caller_key != w.key):
            raise UnauthorizedError(f"heartbeat for worker {msg.name!r} without its session",
                                    field="session", worker=msg.name)
        w.last_seen = now
        if msg.stats is not None:  # typed and bounded by the decoder; labels: its functions
            self.metrics.worker_stats.update(w.name, msg.stats, w.functions)
        return []

    def _on_deregister(self, peer: bytes, msg: DeregisterMsg, arrays: Any, now: float) -> list[Send]:
        w = self.workers.get(msg.name)
        if w is None or w.identity != peer or not w.alive:
            return []  # only the connection that registered may say it leaves
        return self._worker_lost(w, f"it deregistered ({msg.reason or 'no reason given'})", now)

    def _prune_dead(self, now: float, *, force: bool = False) -> None:
        """Forget lost workers after the grace period (all of them when ``force``), unless a
        run waits for one to come back."""
        waited = {r.waiting_for for r in self.runs.values() if r.waiting_for}
        for w in [w for w in self.workers.values() if not w.alive and w.name not in waited]:
            if force or (w.lost_at is not None and now - w.lost_at > self.limits.dead_grace_s):
                del self.workers[w.name]
                self.metrics.worker_alive.remove(w.name, w.plugin, w.device)
                self.metrics.worker_stats.forget(w.name)

    def _worker_lost(self, w: WorkerRecord, why: str, now: float | None = None) -> list[Send]:
        w.alive = False
        w.lost_at = time.monotonic() if now is None else now
        self.metrics.worker_alive.labels(w.name, w.plugin, w.device).set(0)
        log.warning("worker %s lost: %s", w.name, why,
                    extra={"worker": w.name, "code": "worker_lost"})
        # a lost replica leaves its pool's routes first: retries are placed on the others
        out: list[Send] = self._forget_staged(w.name)
        out += self._recompile_pool(w.pool) if w.pool else []
        for run in list(self.runs_by_worker.pop(w.name, ())):
            rec = self.runs.get(run)
            if rec is None:
                continue
            nodes = [n for n, wk in rec.outstanding.items() if wk == w.name]
            if not nodes and rec.direct:  # its nodes send no DONE: any of them may be running
                nodes = [n for n, wk in rec.placement.items() if wk == w.name]
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

    def _hosts(self) -> dict[str, str | None]:
        return {n: w.host for n, w in self.workers.items() if w.alive}

    def _pools(self) -> dict[str, list[str]]:
        """Pool -> its live replicas."""
        pools: dict[str, list[str]] = {}
        for w in self.workers.values():
            if w.alive and w.pool:
                pools.setdefault(w.pool, []).append(w.name)
        return pools

    def _compile(self, spec: GraphSpec, version: int) -> CompiledGraph:
        draining = {n for n, w in self.workers.items() if w.draining_since is not None}
        return compile_graph(spec, self._live_functions(), self._endpoints(), version,
                             self._keys(), self._hosts(), self._pools(), draining)

    # --- graphs -------------------------------------------------------------------------------

    def _on_graph(self, peer: bytes, msg: GraphMsg, arrays: Any, now: float) -> list[Send]:
        self.authority.require_client(self.caller_key, f"GRAPH {msg.op}")
        if msg.op == "drop":
            name = msg.graph or msg.spec.get("name")
            if not isinstance(name, str) or name not in self.graph_specs:
                raise UnknownTargetError(f"no graph named {name!r}", field="graph")
            compiled = self.graphs.pop(name, None)
            self.graph_specs.pop(name)
            self.store.drop_graph(name)
            for metric in (self.metrics.runs, self.metrics.run_latency, self.metrics.node_compute):
                metric.remove_where(0, name)
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
            raise BadHeaderError(f"graph spec is invalid: {str(exc)[:300]}", field="spec") from None
        if msg.op == "validate":
            order = validate(spec, self._live_functions(), self._pools())
            return [Send(peer, reply(msg, {"graph": spec.name, "valid": True, "order": order}))]
        if spec.name not in self.graph_specs and len(self.graph_specs) >= self.limits.max_graphs:
            raise BusyError(f"{len(self.graph_specs)} graphs are registered, the most this "
                            f"coordinator keeps; drop some first", field="spec")
        self._check_requests(peer)
        version = self.graph_specs.get(spec.name, (0, spec))[0] + 1
        compiled = self._compile(spec, version)
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
            ctl = plan_msg(worker, compiled.spec.name, plan.model_dump())
            if op is not None:
                op.waiting.add(ctl.id)
                op.responders[ctl.id] = self.workers[worker].identity
                self.ops[ctl.id] = op
            out.append(Send(self.workers[worker].identity, ctl))
        return out
