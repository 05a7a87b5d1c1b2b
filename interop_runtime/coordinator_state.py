"""The coordinator's state machine: ``handle(peer, envelope, now)`` and ``tick(now)``
return the messages to send; nothing here touches a socket.

It knows, at every moment, which nodes of each run are outstanding on which
worker, so a lost worker fails exactly the runs that needed it (a lookup, not
a search). Tensors on graph edges never pass through here: only client inputs
going in and graph outputs coming back do.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codec import Envelope, new_id
from .errors import (
    BadHeaderError,
    BusyError,
    CancelledError_,
    InteropError,
    TimeoutError_,
    UnknownKindError,
    UnknownTargetError,
    UnsupportedError,
    WorkerLostError,
    make_error,
)
from .graph import CompiledGraph, GraphSpec, compile_graph, validate
from .metrics import CoordinatorMetrics
from .messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DataMsg,
    DeregisterMsg,
    DoneMsg,
    ErrorMsg,
    FunctionSpec,
    GraphMsg,
    Header,
    HeartbeatMsg,
    ParamMsg,
    QueryMsg,
    RegisterMsg,
    ReplyMsg,
    RunMsg,
)
from .security import is_wildcard
from .signatures import check_array
from .store import Store

log = logging.getLogger("interop.coordinator")

NAME = "coordinator"


@dataclass
class Send:
    """Instruction: send ``msg`` (with ``arrays``) to the peer with ROUTER identity ``peer``."""

    peer: bytes
    msg: Header
    arrays: dict[str, np.ndarray] | None = None
    run: str | None = None  # set on a run's final reply: if undeliverable, keep the result


@dataclass
class WorkerRecord:
    name: str
    identity: bytes
    endpoint: str
    plugin: str
    device: str
    functions: dict[str, FunctionSpec]
    pid: int | None
    last_seen: float
    alive: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    public_key: str | None = None

    def public(self, now: float) -> dict[str, Any]:
        return {"name": self.name, "plugin": self.plugin, "device": self.device,
                "endpoint": self.endpoint, "alive": self.alive, "pid": self.pid,
                "last_seen_s": round(now - self.last_seen, 3), "info": self.info,
                "functions": [f.model_dump(exclude_none=True) for f in self.functions.values()]}


@dataclass
class RunRecord:
    run: str
    graph: str
    client: bytes
    client_msg: str
    started: float
    deadline: float
    detach: bool
    outstanding: dict[str, str]  # node -> worker
    workers: set[str]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # kept for retries
    attempt: int = 0
    waiting_for: str | None = None  # a lost worker this run waits for, to retry

    @property
    def wire_run(self) -> str:
        """The run id on the wire for this attempt: workers drop a cancelled id for good."""
        return self.run if self.attempt == 0 else f"{self.run}~{self.attempt}"


@dataclass
class PendingOp:
    """A client request waiting on workers: plan acks, or a forwarded CONTROL/PARAM."""

    client: bytes
    client_msg: str
    deadline: float
    waiting: set[str]
    body: dict[str, Any] = field(default_factory=dict)
    forwarded_to: str | None = None


def _reply(to: Header, body: dict[str, Any] | None = None) -> ReplyMsg:
    return ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, reply_to=to.id, body=body or {})


def error_reply(exc: InteropError, reply_to: str | None, run: str | None = None) -> ErrorMsg:
    return ErrorMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, reply_to=reply_to,
                    code=exc.code.value, message=exc.message, run=run, **exc.details())


class CoordinatorState:
    def __init__(self, store: Store | None = None, *, heartbeat_s: float = 1.0,
                 dead_after_s: float | None = None, default_run_timeout_s: float = 300.0,
                 request_timeout_s: float = 30.0,
                 metrics: CoordinatorMetrics | None = None,
                 max_runs_in_flight: int = 10_000, max_runs_per_client: int = 1_000) -> None:
        self.store = store or Store()
        self.metrics = metrics or CoordinatorMetrics()
        self.heartbeat_s = heartbeat_s
        # two missed heartbeats: a dead worker's runs fail (or retry) within two intervals
        self.dead_after_s = dead_after_s if dead_after_s is not None else 2 * heartbeat_s
        self.default_run_timeout_s = default_run_timeout_s
        self.request_timeout_s = request_timeout_s
        self.workers: dict[str, WorkerRecord] = {}
        self.graphs: dict[str, CompiledGraph] = {}
        self.graph_specs: dict[str, tuple[int, GraphSpec]] = {}
        self.runs: dict[str, RunRecord] = {}
        self.wire_runs: dict[str, str] = {}  # retry attempt id -> run id
        self.max_runs_in_flight = max_runs_in_flight
        self.max_runs_per_client = max_runs_per_client  # per connection: one client can't hog
        self.runs_by_client: dict[bytes, int] = defaultdict(int)
        self.runs_by_worker: dict[str, set[str]] = defaultdict(set)
        self.ops: dict[str, PendingOp] = {}  # id of the message we sent -> op
        self.finished_ok = 0
        self.finished_failed = 0
        self.store.mark_interrupted()
        for name, version, spec in self.store.load_graphs():
            self.graph_specs[name] = (version, GraphSpec.model_validate(spec))

    # --- entry points -------------------------------------------------------------------------

    def handle(self, peer: bytes, env: Envelope, now: float | None = None) -> list[Send]:
        now = time.monotonic() if now is None else now
        msg = env.msg
        self.metrics.messages.labels(msg.kind).inc()
        try:
            handler = self._HANDLERS.get(type(msg))
            if handler is None:
                raise UnknownKindError(f"the coordinator does not accept {msg.kind!r} messages",
                                       field="kind")
            return handler(self, peer, msg, env.arrays, now)
        except InteropError as exc:
            return [Send(peer, error_reply(exc, msg.id, getattr(msg, "run", None)))]

    def bad_message(self, peer: bytes, exc: InteropError) -> list[Send]:
        self.metrics.bad_messages.labels(exc.code.value).inc()
        return [Send(peer, error_reply(exc, None))]

    def tick(self, now: float | None = None) -> list[Send]:
        """Liveness and deadlines: lost workers, expired runs and requests."""
        now = time.monotonic() if now is None else now
        out: list[Send] = []
        for w in self.workers.values():
            if w.alive and now - w.last_seen > self.dead_after_s:
                out += self._worker_lost(w, f"no heartbeat for {now - w.last_seen:.1f}s")
        for rec in [r for r in self.runs.values() if now > r.deadline]:
            if rec.waiting_for:
                out += self._fail_run(rec, WorkerLostError(
                    f"run {rec.run} passed its deadline waiting for lost worker "
                    f"{rec.waiting_for!r} to come back for a retry", worker=rec.waiting_for))
                continue
            nodes = ", ".join(f"{n} on {w}" for n, w in rec.outstanding.items())
            out += self._fail_run(rec, TimeoutError_(
                f"run {rec.run} passed its deadline with nodes outstanding: {nodes}",
                node=next(iter(rec.outstanding), None)))
        for op_id in [k for k, op in self.ops.items() if now > op.deadline]:
            op = self.ops.pop(op_id)
            what = f"worker {op.forwarded_to!r}" if op.forwarded_to else "the workers"
            out.append(Send(op.client, error_reply(
                TimeoutError_(f"no answer from {what} in time", worker=op.forwarded_to),
                op.client_msg)))
        return out

    def undeliverable(self, send: Send) -> list[Send]:
        """A message could not be queued. A run's final reply: keep the result to collect.
        A run's inputs for a worker whose queue is full: fail the run (never a silent drop)."""
        if send.run and isinstance(send.msg, ReplyMsg):
            self.store.save_result(send.run, send.arrays or {})
        elif isinstance(send.msg, DataMsg):
            rec = self.runs.get(self.wire_runs.get(send.msg.run, send.msg.run))
            if rec is not None:
                return self._fail_run(rec, BusyError(
                    f"worker {send.msg.dst!r} is not keeping up (its queue is full); run "
                    f"{rec.run} was not started", worker=send.msg.dst, node=send.msg.node))
        return []

    # --- workers ------------------------------------------------------------------------------

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
        out.append(Send(peer, _reply(msg, {"name": msg.name})))
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
            out = [Send(peer, _reply(msg, {"graph": name, "dropped": True}))]
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
            return [Send(peer, _reply(msg, {"graph": spec.name, "valid": True, "order": order}))]
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
            return [Send(peer, _reply(msg, op.body))]
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

    # --- runs -----------------------------------------------------------------------------------

    def _on_run(self, peer: bytes, msg: RunMsg, arrays: dict[str, np.ndarray], now: float
                ) -> list[Send]:
        compiled = self.graphs.get(msg.graph)
        if compiled is None:
            if msg.graph in self.graph_specs:
                spec = self.graph_specs[msg.graph][1]
                missing = sorted({n.worker for n in spec.nodes.values()} - set(self._endpoints()))
                raise WorkerLostError(f"graph {msg.graph!r} is registered but its workers are not "
                                      f"all here (missing: {', '.join(missing)})",
                                      worker=missing[0] if missing else None)
            raise UnknownTargetError(f"no graph named {msg.graph!r} is registered", field="graph")
        if msg.run in self.runs:
            raise BadHeaderError(f"run id {msg.run!r} is already in flight", field="run")
        if "~" in msg.run:
            raise BadHeaderError("run ids must not contain '~' (it marks retry attempts)",
                                 field="run")
        if len(self.runs) >= self.max_runs_in_flight:
            raise BusyError(f"{len(self.runs)} runs are in flight, the most this coordinator "
                            f"takes; retry later")
        if self.runs_by_client[peer] >= self.max_runs_per_client:
            raise BusyError(f"this connection has {self.runs_by_client[peer]} runs in flight, the "
                            f"most one connection may have; wait for some to finish")
        spec = compiled.spec
        for name in arrays:
            if name not in compiled.input_routes:
                raise UnknownTargetError(f"graph {msg.graph!r} has no input {name!r} (inputs: "
                                         f"{', '.join(compiled.input_routes) or 'none'})", field=name)
        for name, expected in compiled.input_specs.items():
            if name not in arrays:
                raise BadHeaderError(f"graph input {name!r} is missing", field=name)
            check_array(expected, arrays[name], where=f"graph input {name!r}")
        workers = {n.worker for n in spec.nodes.values()}
        for wname in workers:
            w = self.workers.get(wname)
            if w is None or not w.alive:
                node = next(n for n, s in spec.nodes.items() if s.worker == wname)
                raise WorkerLostError(f"worker {wname!r} needed by node {node!r} is not alive",
                                      worker=wname, node=node)
        timeout = msg.timeout_s if msg.timeout_s is not None else self.default_run_timeout_s
        rec = RunRecord(run=msg.run, graph=msg.graph, client=peer, client_msg=msg.id, started=now,
                        deadline=now + timeout, detach=msg.detach, outstanding={}, workers=workers)
        if any(n.retries for n in spec.nodes.values()):
            rec.inputs = dict(arrays)
        self.runs[msg.run] = rec
        self.runs_by_client[peer] += 1
        self.metrics.runs_active.inc()
        self.metrics.bytes.labels("client_to_workers").inc(sum(a.nbytes for a in arrays.values()))
        self.store.run_started(msg.run, msg.graph, time.time())
        out = self._dispatch(rec, compiled, arrays)
        if msg.detach:
            out.append(Send(peer, _reply(msg, {"run": msg.run, "state": "running"})))
        return out

    def _dispatch(self, rec: RunRecord, compiled: CompiledGraph, arrays: dict[str, np.ndarray]
                  ) -> list[Send]:
        """Send a run's inputs (and empty triggers for source nodes) to their workers."""
        spec = compiled.spec
        rec.outstanding = {n: s.worker for n, s in spec.nodes.items()}
        for wname in rec.workers:
            self.runs_by_worker[wname].add(rec.run)
        batches: dict[tuple[str, str], dict[str, np.ndarray]] = defaultdict(dict)
        for gin, routes in compiled.input_routes.items():
            for worker, node, inp in routes:
                batches[(worker, node)][inp] = arrays[gin]
        for node in compiled.source_nodes:
            batches[(spec.nodes[node].worker, node)]  # noqa: B018 - an empty trigger
        return [Send(self.workers[w].identity,
                     DataMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, dst=w, graph=rec.graph,
                             run=rec.wire_run, node=node), tensors)
                for (w, node), tensors in batches.items()]

    def _retry_or_fail(self, rec: RunRecord, w: WorkerRecord, nodes: list[str], why: str
                       ) -> list[Send]:
        spec = self.graph_specs[rec.graph][1]
        if all(spec.nodes[n].retries > rec.attempt for n in nodes):
            log.warning("run %s: worker %s lost with idempotent node(s) %s outstanding; will "
                        "retry (attempt %d) when it is back", rec.run, w.name, ", ".join(nodes),
                        rec.attempt + 1)
            out = self._cancel_on_workers(rec)
            self.wire_runs.pop(rec.wire_run, None)
            rec.attempt += 1
            self.wire_runs[rec.wire_run] = rec.run
            rec.waiting_for, rec.outstanding, rec.outputs, rec.timings = w.name, {}, {}, {}
            return out
        return self._fail_run(rec, WorkerLostError(
            f"worker {w.name!r} was lost ({why}) while node(s) {', '.join(nodes)} of run "
            f"{rec.run} were outstanding", worker=w.name, node=nodes[0]))

    def _resume_waiting_runs(self, worker: str) -> list[Send]:
        out: list[Send] = []
        for rec in [r for r in self.runs.values() if r.waiting_for == worker]:
            compiled = self.graphs.get(rec.graph)
            if compiled is None:
                continue  # other workers still missing; the next registration tries again
            rec.waiting_for = None
            out += self._dispatch(rec, compiled, rec.inputs)
        return out

    def _on_done(self, peer: bytes, msg: DoneMsg, arrays: dict[str, np.ndarray], now: float
                 ) -> list[Send]:
        rec = self.runs.get(self.wire_runs.get(msg.run, msg.run))
        if rec is None or msg.run != rec.wire_run or msg.node not in rec.outstanding:
            return []  # a run that already failed or was cancelled, or an earlier attempt
        if not msg.ok:
            worker = rec.outstanding.get(msg.node)
            return self._fail_run(rec, make_error(
                msg.code or "function_failed",
                f"node {msg.node!r} on worker {worker!r} failed: {msg.message}",
                node=msg.node, worker=worker))
        worker = rec.outstanding.pop(msg.node)
        rec.outputs.update(arrays)
        self.metrics.node_compute.labels(rec.graph, msg.node, worker).observe(msg.compute_us / 1e6)
        self.metrics.bytes.labels("worker_to_worker").inc(msg.bytes_out)
        rec.timings[msg.node] = {"worker": worker, "compute_us": msg.compute_us,
                                 "wait_us": msg.wait_us, "bytes_out": msg.bytes_out,
                                 "done_us": int((now - rec.started) * 1e6)}
        if rec.outstanding:
            return []
        return self._finish_run(rec, now)

    def _forget_run(self, rec: RunRecord) -> None:
        if self.runs.pop(rec.run, None) is not None:
            self.metrics.runs_active.dec()
            self.runs_by_client[rec.client] -= 1
            if not self.runs_by_client[rec.client]:
                del self.runs_by_client[rec.client]
        self.wire_runs.pop(rec.wire_run, None)
        for w in rec.workers:
            self.runs_by_worker.get(w, set()).discard(rec.run)

    def _finish_run(self, rec: RunRecord, now: float) -> list[Send]:
        self._forget_run(rec)
        self.finished_ok += 1
        self.metrics.runs.labels(rec.graph, "ok").inc()
        self.metrics.run_latency.labels(rec.graph).observe(now - rec.started)
        self.metrics.bytes.labels("workers_to_client").inc(
            sum(a.nbytes for a in rec.outputs.values()))
        body = {"run": rec.run, "graph": rec.graph, "elapsed_us": int((now - rec.started) * 1e6),
                "timings": rec.timings}
        self.store.run_finished(rec.run, "done", timings=rec.timings)
        if rec.detach:
            self.store.save_result(rec.run, rec.outputs)
            return []
        reply = ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, reply_to=rec.client_msg,
                         body=body)
        return [Send(rec.client, reply, rec.outputs, run=rec.run)]

    def _fail_run(self, rec: RunRecord, exc: InteropError) -> list[Send]:
        self._forget_run(rec)
        self.finished_failed += 1
        self.metrics.runs.labels(rec.graph, exc.code.value).inc()
        log.warning("run %s failed: %s", rec.run, exc)
        self.store.run_finished(rec.run, "failed" if not isinstance(exc, CancelledError_)
                                else "cancelled", error={"code": exc.code.value,
                                                         "message": exc.message, **exc.details()})
        out = [Send(rec.client, error_reply(exc, rec.client_msg, rec.run))] if not rec.detach else []
        return out + self._cancel_on_workers(rec)

    def _cancel_on_workers(self, rec: RunRecord) -> list[Send]:
        """Tell the run's live workers to drop its pending inputs and ignore late data."""
        return [Send(w.identity, ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME,
                                            action="cancel", run=rec.wire_run))
                for w in (self.workers.get(n) for n in rec.workers) if w and w.alive]

    # --- queries, control, params -------------------------------------------------------------

    def _on_query(self, peer: bytes, msg: QueryMsg, arrays: Any, now: float) -> list[Send]:
        if msg.what == "workers":
            body: dict[str, Any] = {"workers": [w.public(now) for w in self.workers.values()]}
        elif msg.what == "graphs":
            body = {"graphs": [{"name": n, "version": v, "nodes": list(s.nodes),
                                "ready": n in self.graphs} for n, (v, s) in self.graph_specs.items()]}
        elif msg.what == "runs":
            body = {"active": [{"run": r.run, "graph": r.graph, "outstanding": r.outstanding}
                               for r in self.runs.values()], "recent": self.store.runs(50)}
        elif msg.what == "status":
            body = {"workers_alive": sum(w.alive for w in self.workers.values()),
                    "workers_dead": sum(not w.alive for w in self.workers.values()),
                    "graphs": len(self.graph_specs), "runs_active": len(self.runs),
                    "runs_ok": self.finished_ok, "runs_failed": self.finished_failed}
        else:  # result
            if not msg.run:
                raise BadHeaderError("query result needs a run id", field="run")
            if msg.run in self.runs:
                raise BusyError(f"run {msg.run} is still running", field="run")
            result = self.store.take_result(msg.run)
            if result is None:
                state = self.store.run_state(msg.run)
                if state in ("failed", "cancelled", "interrupted"):
                    err = self.store.run_error(msg.run) or {}
                    code = err.pop("code", "cancelled")
                    message = err.pop("message", f"run {msg.run} was {state}")
                    raise make_error(code, message, **{k: err.get(k) for k in
                                                       ("field", "node", "edge", "worker")})
                raise UnknownTargetError(f"no uncollected result for run {msg.run!r}", field="run")
            return [Send(peer, _reply(msg, {"run": msg.run}), result)]
        return [Send(peer, _reply(msg, body))]

    def _forward(self, peer: bytes, msg: ControlMsg | ParamMsg, arrays: dict[str, np.ndarray],
                 now: float) -> list[Send]:
        w = self.workers.get(msg.dst or "")
        if w is None:
            known = ", ".join(sorted(self.workers)) or "none"
            raise UnknownTargetError(f"no worker named {msg.dst!r} (workers: {known})",
                                     field="dst", worker=msg.dst)
        if not w.alive:
            raise WorkerLostError(f"worker {w.name!r} is not alive", worker=w.name)
        fwd = msg.model_copy(update={"id": new_id()})
        self.ops[fwd.id] = PendingOp(client=peer, client_msg=msg.id, waiting={fwd.id},
                                     deadline=now + self.request_timeout_s, forwarded_to=w.name)
        return [Send(w.identity, fwd, arrays)]

    def _on_control(self, peer: bytes, msg: ControlMsg, arrays: dict[str, np.ndarray], now: float
                    ) -> list[Send]:
        if msg.dst in (None, "", NAME):
            if msg.action == "ping":
                return [Send(peer, _reply(msg, {"name": NAME}))]
            if msg.action == "cancel" and msg.run:
                rec = self.runs.get(msg.run)
                if rec is None:
                    raise UnknownTargetError(f"no run {msg.run!r} in flight", field="run")
                out = self._fail_run(rec, CancelledError_(f"run {msg.run} was cancelled"))
                return [*out, Send(peer, _reply(msg, {"run": msg.run, "cancelled": True}))]
            raise UnsupportedError(f"the coordinator does not do {msg.action!r}; name a worker "
                                   f"in dst", field="action")
        return self._forward(peer, msg, arrays, now)

    def _on_param(self, peer: bytes, msg: ParamMsg, arrays: dict[str, np.ndarray], now: float
                  ) -> list[Send]:
        return self._forward(peer, msg, arrays, now)

    def _on_reply(self, peer: bytes, msg: ReplyMsg | ErrorMsg, arrays: dict[str, np.ndarray],
                  now: float) -> list[Send]:
        op = self.ops.pop(msg.reply_to or "", None)
        if op is None:
            return []
        if op.forwarded_to is not None:
            back = msg.model_copy(update={"id": new_id(), "reply_to": op.client_msg})
            return [Send(op.client, back, arrays)]
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

    _HANDLERS: dict[type, Any] = {
        RegisterMsg: _on_register, HeartbeatMsg: _on_heartbeat, DeregisterMsg: _on_deregister,
        GraphMsg: _on_graph, RunMsg: _on_run, DoneMsg: _on_done, QueryMsg: _on_query,
        ControlMsg: _on_control, ParamMsg: _on_param, ReplyMsg: _on_reply, ErrorMsg: _on_reply,
        DataMsg: _on_data,
    }
