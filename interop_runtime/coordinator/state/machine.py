"""The coordinator's state machine: ``handle(peer, envelope, now)`` and ``tick(now)``
return the messages to send; nothing here touches a socket. This module
dispatches; registry, runs and requests handle.

It knows, at every moment, which nodes of each run are outstanding on which
worker, so a lost worker fails exactly the runs that needed it (a lookup, not
a search). Tensors on graph edges never pass through here: only client inputs
going in and graph outputs coming back do.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, defaultdict, deque

from interop_runtime.coordinator.metrics import CoordinatorMetrics
from interop_runtime.coordinator.state.admission import Admission
from interop_runtime.coordinator.state.authority import Authority
from interop_runtime.coordinator.state.base import Handler, Limits
from interop_runtime.coordinator.state.pools import Pools
from interop_runtime.coordinator.state.records import Send, error_reply
from interop_runtime.coordinator.state.registry import Registry
from interop_runtime.coordinator.state.requests import Requests
from interop_runtime.coordinator.state.runs import Runs
from interop_runtime.coordinator.state.signatures import Signatures
from interop_runtime.coordinator.state.staging import Staging
from interop_runtime.coordinator.store import Store
from interop_runtime.transport.allowlist import Role
from interop_runtime.wire.codec import Envelope, new_id
from interop_runtime.wire.errors import (
    BusyError,
    InternalError,
    InteropError,
    RunTimeoutError,
    UnknownKindError,
    WorkerLostError,
)
from interop_runtime.wire.messages import (
    ControlMsg,
    DataMsg,
    DeregisterMsg,
    DoneMsg,
    ErrorMsg,
    GraphMsg,
    HeartbeatMsg,
    ParamMsg,
    QueryMsg,
    RegisterMsg,
    ReplyMsg,
    RunMsg,
)
from interop_runtime.wire.payloads import GraphSpec

log = logging.getLogger("interop.coordinator")

RECENT_RUNS = 200  # finished non-detached runs kept in memory for QUERY runs


class CoordinatorState(Pools, Registry, Staging, Runs, Requests, Signatures):
    def __init__(self, store: Store | None = None, *, heartbeat_s: float = 1.0,
                 dead_after_s: float | None = None, default_run_timeout_s: float = 300.0,
                 request_timeout_s: float = 30.0,
                 metrics: CoordinatorMetrics | None = None,
                 max_runs_in_flight: int = 10_000, max_runs_per_client: int = 1_000,
                 roles: dict[str, Role] | None = None, limits: Limits | None = None,
                 admission: Admission | None = None) -> None:
        self.epoch = new_id()
        self.authority = Authority(roles)
        self.caller_key = None
        self.limits = limits or Limits(dead_grace_s=max(60.0, 30 * heartbeat_s))
        self.store = store or Store()
        self.metrics = metrics or CoordinatorMetrics()
        self.heartbeat_s = heartbeat_s
        # two missed heartbeats: a dead worker's runs fail (or retry) within two intervals
        self.dead_after_s = dead_after_s if dead_after_s is not None else 2 * heartbeat_s
        self.default_run_timeout_s = default_run_timeout_s
        self.request_timeout_s = request_timeout_s
        self.workers = {}
        self.graphs = {}
        self.graph_specs = {}
        self.invalid_graphs = {}  # graph -> why it no longer fits a worker (signatures.py)
        self.runs = {}
        self.wire_runs = {}  # retry attempt id -> run id
        self.admission = admission or Admission(max_runs_in_flight, max_runs_per_client)
        self.runs_by_worker = defaultdict(set)
        self.ops = {}  # id of the message we sent -> op
        self.staged_plans, self.staged_by_pair = {}, {}  # plans a (re)joined worker acks first
        self.parked = {}  # replies held until a worker's staged plans settle
        self.finished_ok = 0
        self.recent = deque(maxlen=RECENT_RUNS)  # finished runs that were not detached
        self.early_done = OrderedDict()
        self.finished_failed = 0
        self.store.mark_interrupted()
        for name, version, spec in self.store.load_graphs():
            self.graph_specs[name] = (version, GraphSpec.model_validate(spec))

    # --- entry points -------------------------------------------------------------------------

    def handle(self, peer: bytes, env: Envelope, now: float | None = None,
               key: str | None = None) -> list[Send]:
        """One message from ROUTER identity ``peer``, authenticated as CURVE ``key`` (None
        without CURVE). Never raises: every failure is a typed ERROR to the sender."""
        now = time.monotonic() if now is None else now
        msg = env.msg
        self.caller_key = key
        self.metrics.messages.labels(msg.kind).inc()
        try:
            handler = self._HANDLERS.get(type(msg))
            if handler is None:
                raise UnknownKindError(f"the coordinator does not accept {msg.kind!r} messages",
                                       field="kind")
            out: list[Send] = handler(self, peer, msg, env.arrays, now)
            return out
        except InteropError as exc:
            if exc.code.value == "unauthorized":
                self.metrics.bad_messages.labels("unauthorized").inc()
                log.warning("refused %s from %s: %s", msg.kind, _who(peer, key), exc.message,
                            extra={"code": exc.code.value, "worker": exc.worker,
                                   "run": getattr(msg, "run", None),
                                   "graph": getattr(msg, "graph", None)})
            return [Send(peer, error_reply(exc, msg.id, getattr(msg, "run", None)))]
        except Exception:  # a bug must cost one message, not the coordinator
            log.exception("internal error while handling %s from %s", msg.kind, _who(peer, key))
            internal = InternalError(f"internal error while handling {msg.kind}; the "
                                     f"coordinator logged it and carries on")
            return [Send(peer, error_reply(internal, msg.id, None))]
        finally:
            self.caller_key = None

    def bad_message(self, peer: bytes, exc: InteropError) -> list[Send]:
        self.metrics.bad_messages.labels(exc.code.value).inc()
        return [Send(peer, error_reply(exc, None))]

    def tick(self, now: float | None = None) -> list[Send]:
        """Liveness and deadlines: lost workers, expired runs and requests."""
        now = time.monotonic() if now is None else now
        out: list[Send] = []
        for w in list(self.workers.values()):
            if w.alive and now - w.last_seen > self.dead_after_s:
                out += self._worker_lost(w, f"no heartbeat for {now - w.last_seen:.1f}s", now)
        self._prune_dead(now)  # a dead name cannot hold a slot forever
        out += self._shut_drained(now)
        out += self._expire_staged(now)
        while self.early_done:  # oldest first: stop at the first that may still be needed
            run, (first, _) = next(iter(self.early_done.items()))
            if now - first <= self.limits.early_done_s:
                break
            del self.early_done[run]
        for rec in [r for r in self.runs.values() if now > r.deadline]:
            if rec.waiting_for:
                out += self._fail_run(rec, WorkerLostError(
                    f"run {rec.run} passed its deadline waiting for lost worker "
                    f"{rec.waiting_for!r} to come back for a retry", worker=rec.waiting_for))
                continue
            nodes = ", ".join(f"{n} on {w}" for n, w in rec.outstanding.items())
            out += self._fail_run(rec, RunTimeoutError(
                f"run {rec.run} passed its deadline with nodes outstanding: {nodes}",
                node=next(iter(rec.outstanding), None)))
        for op_id in [k for k, op in self.ops.items() if now > op.deadline]:
            op = self.ops.pop(op_id)
            what = f"worker {op.forwarded_to!r}" if op.forwarded_to else "the workers"
            out.append(Send(op.client, error_reply(
                RunTimeoutError(f"no answer from {what} in time", worker=op.forwarded_to),
                op.client_msg)))
        return out

    def undeliverable(self, send: Send, *, gone: bool = False) -> list[Send]:
        """A message could not be queued: its peer is ``gone`` (disconnected), or its queue
        is full. A run's final reply: keep the result to collect. A run's inputs: a gone
        worker is lost (idempotent runs wait for it and retry), a full queue fails the run
        with ``busy`` (never a silent drop)."""
        if send.run and isinstance(send.msg, ReplyMsg):
            # the client left: its result waits for QUERY result, by its key only
            self.store.run_started(send.run, send.graph, time.time(), owner=send.owner)
            self.store.run_finished(send.run, "done")
            self.store.save_result(send.run, send.arrays or {})
        elif isinstance(send.msg, DataMsg):
            rec = self.runs.get(self.wire_runs.get(send.msg.run, send.msg.run))
            if rec is not None:
                worker, node = send.msg.dst, send.msg.node
                w = self.workers.get(worker or "")
                if gone and w is not None:
                    # lost before the inputs left: the same loss a closed connection is found
                    # to be later, with the same retries (a killed worker races its inputs)
                    if w.alive and w.identity == send.peer:
                        return self._worker_lost(w, "its connection closed")
                    nodes = [n for n, on in rec.outstanding.items() if on == worker] or [node]
                    out = self._retry_or_fail(rec, w, nodes, "its connection closed")
                    return out + (self._resume_waiting_runs(w.name) if w.alive else [])
                exc: InteropError = WorkerLostError(
                    f"worker {worker!r} is gone (its connection closed); run {rec.run} was not "
                    f"started", worker=worker, node=node) if gone else BusyError(
                    f"worker {worker!r} is not keeping up (its queue is full); run {rec.run} "
                    f"was not started", worker=worker, node=node)
                return self._fail_run(rec, exc)
        return []

    _HANDLERS: dict[type, Handler] = {
        RegisterMsg: Registry._on_register, HeartbeatMsg: Registry._on_heartbeat, DeregisterMsg: Registry._on_deregister,
        GraphMsg: Registry._on_graph, RunMsg: Runs._on_run, DoneMsg: Runs._on_done, QueryMsg: Requests._on_query,
        ControlMsg: Requests._on_control, ParamMsg: Requests._on_param, ReplyMsg: Requests._on_reply, ErrorMsg: Requests._on_reply,
        DataMsg: Requests._on_data,
    }
    # function tables that change (models loaded into running workers): checked first
    _HANDLERS.update({ControlMsg: Signatures._on_control_models,
                      RunMsg: Signatures._on_run_checked, QueryMsg: Signatures._on_query_checked})


def _who(peer: bytes, key: str | None) -> str:
    return f"key {key[:8]}..." if key else f"connection {peer.hex()}"
