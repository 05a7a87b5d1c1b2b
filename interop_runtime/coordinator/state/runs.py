"""Run bookkeeping: a run from RUN to its reply, dispatch of its inputs, completions,
retries of idempotent nodes, failures and cancellation on the workers."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from interop_runtime.coordinator.state.base import StateTables
from interop_runtime.coordinator.state.records import (
    NAME,
    RunRecord,
    Send,
    WorkerRecord,
    error_reply,
    reply,
)
from interop_runtime.coordinator.state.timeline import node_timing
from interop_runtime.graph.compile import CompiledGraph
from interop_runtime.graph.signatures import check_array
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import (
    BadHeaderError,
    InteropError,
    RunCancelledError,
    UnknownTargetError,
    UnsupportedError,
    WorkerLostError,
    make_error,
)
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DataMsg,
    DoneMsg,
    ReplyMsg,
    RunMsg,
)

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("interop.coordinator")


class Runs(StateTables):
    def _on_run(self, peer: bytes, msg: RunMsg, arrays: dict[str, np.ndarray], now: float
                ) -> list[Send]:
        self.authority.require_client(self.caller_key, "RUN")
        compiled = self.graphs.get(msg.graph)
        if compiled is None:
            if msg.graph in self.graph_specs:
                spec = self.graph_specs[msg.graph][1]
                live = set(self._endpoints())
                missing = sorted({n.worker for n in spec.nodes.values() if n.worker} - live)
                missing += sorted({f"pool:{n.pool}" for n in spec.nodes.values() if n.pool}
                                  - {f"pool:{p}" for p in self._pools()})
                raise WorkerLostError(f"graph {msg.graph!r} is registered but its workers are not "
                                      f"all here (missing: {', '.join(missing)})",
                                      worker=missing[0] if missing else None)
            raise UnknownTargetError(f"no graph named {msg.graph!r} is registered", field="graph")
        if msg.run in self.runs:
            raise BadHeaderError(f"run id {msg.run!r} is already in flight", field="run")
        if "~" in msg.run:
            raise BadHeaderError("run ids must not contain '~' (it marks retry attempts)",
                                 field="run")
        if msg.direct:
            self._check_direct(msg, compiled, arrays)
        nbytes = msg.input_bytes if msg.direct else sum(a.nbytes for a in arrays.values())
        self.admission.check(peer, nbytes)
        # runs have owners only under CURVE: without a key there is no record to protect
        if self.caller_key is not None and self.store.run_owned_by_other(msg.run,
                                                                         self.caller_key):
            raise BadHeaderError(f"run id {msg.run!r} belongs to another client", field="run")
        spec = compiled.spec
        for name in arrays:
            if name not in compiled.input_routes:
                raise UnknownTargetError(f"graph {msg.graph!r} has no input {name!r} (inputs: "
                                         f"{', '.join(compiled.input_routes) or 'none'})", field=name)
        for name, expected in ({} if msg.direct else compiled.input_specs).items():
            if name not in arrays:
                raise BadHeaderError(f"graph input {name!r} is missing", field=name)
            check_array(expected, arrays[name], where=f"graph input {name!r}")
        placement = self._place_run(compiled, msg.place if msg.direct else None, msg.run)
        workers = set(placement.values())
        for node, wname in placement.items():
            w = self.workers.get(wname)
            if w is None or not w.alive:
                raise WorkerLostError(f"worker {wname!r} needed by node {node!r} is not alive",
                                      worker=wname, node=node)
        timeout = msg.timeout_s if msg.timeout_s is not None else self.default_run_timeout_s
        rec = RunRecord(run=msg.run, graph=msg.graph, client=peer, client_msg=msg.id, started=now,
                        deadline=now + timeout, detach=msg.detach, outstanding={}, workers=workers,
                        owner=self.caller_key, input_bytes=nbytes, direct=msg.direct,
                        started_unix_us=time.time_ns() // 1000, placement=placement)
        if any(n.retries for n in spec.nodes.values()):
            rec.inputs = dict(arrays)
        self.runs[msg.run] = rec
        self.admission.admit(peer, nbytes)
        self.metrics.runs_active.inc()
        self.metrics.bytes.labels("client_to_workers").inc(nbytes)
        if msg.detach:  # its record must survive a crash before its client hears "running"
            self.store.run_started(msg.run, msg.graph, time.time(), owner=self.caller_key,
                                   urgent=True)
        # a run whose client waits for its reply touches no SQLite on its way: after a crash,
        # the client's epoch check ends it (coordinator_restarted)
        if msg.direct:  # the client sent the inputs itself; completions may be here already
            self._track(rec, compiled)
            out = []
            for worker, done, outputs in self.early_done.pop(rec.wire_run, (0.0, []))[1]:
                out += self._on_done(worker, done, outputs, now)
            return out
        out = self._dispatch(rec, compiled, arrays)
        if msg.detach:
            out.append(Send(peer, reply(msg, {"run": msg.run, "state": "running",
                                              "epoch": self.epoch})))
        return out

    def _check_direct(self, msg: RunMsg, compiled: CompiledGraph,
                      arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            raise BadHeaderError("a direct RUN carries no tensors: the client sends them to "
                                 "the workers", field="tensors")
        if msg.detach:
            raise BadHeaderError("a detached run goes through the coordinator, not direct",
                                 field="direct")
        why = compiled.direct_refusal()
        if why is not None:
            raise UnsupportedError(f"graph {msg.graph!r} cannot run direct: {why}",
                                   field="direct")
        if msg.routes != compiled.routes_id:
            raise UnknownTargetError(f"graph {msg.graph!r} was compiled again since these "
                                     f"routes were read: ask QUERY routes again",
                                     field="routes")

    def _track(self, rec: RunRecord, compiled: CompiledGraph) -> None:
        spec = compiled.spec
        rec.outstanding = dict(rec.placement)
        if rec.direct:  # only the nodes with graph outputs report a direct run's success
            ends = {ref.partition(".")[0] for ref in spec.outputs.values()}
            rec.outstanding = {n: w for n, w in rec.outstanding.items() if n in ends}
        for wname in rec.workers:
            self.runs_by_worker[wname].add(rec.run)

    def _hold_early(self, peer: bytes, msg: DoneMsg, arrays: dict[str, np.ndarray],
                    now: float) -> None:
        """A DONE for a run we do not know: a direct run's workers may finish before its
        RUN record reaches us. Kept briefly, and boundedly; most are late DONEs of ended
        runs, which simply expire."""
        if msg.run not in self.early_done and len(self.early_done) >= self.limits.max_early_done:
            self.early_done.popitem(last=False)
        self.early_done.setdefault(msg.run, (now, []))[1].append((peer, msg, arrays))

    def _dispatch(self, rec: RunRecord, compiled: CompiledGraph, arrays: dict[str, np.ndarray]
                  ) -> list[Send]:
        """Send a run's inputs (and empty triggers for source nodes) to their workers."""
        self._track(rec, compiled)
        batches: dict[tuple[str, str], dict[str, np.ndarray]] = defaultdict(dict)
        for gin, routes in compiled.input_routes.items():
            for worker, node, inp in routes:
                if rec.placement[node] == worker:  # a pool node: only its placed replica
                    batches[(worker, node)][inp] = arrays[gin]
        for node in compiled.source_nodes:
            batches[(rec.placement[node], node)]
        place = {n: rec.placement[n] for n in compiled.replicas} or None
        return [Send(self.workers[w].identity,
                     DataMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, dst=w, graph=rec.graph,
                             run=rec.wire_run, node=node, place=place), tensors)
                for (w, node), tensors in batches.items()]

    def _retry_or_fail(self, rec: RunRecord, w: WorkerRecord, nodes: list[str], why: str
                       ) -> list[Send]:
        spec = self.graph_specs[rec.graph][1]
        compiled = self.graphs.get(rec.graph)
        if compiled is not None and all(spec.nodes[n].pool and spec.nodes[n].retries > rec.attempt
                                        for n in nodes):
            # idempotent pool nodes: at once, on the other replicas (the pool's routes
            # already leave the lost one out)
            log.warning("run %s: replica %s lost with node(s) %s outstanding; retrying on "
                        "another replica (attempt %d)", rec.run, w.name, ", ".join(nodes),
                        rec.attempt + 1)
            out = self._cancel_on_workers(rec)
            self._forget_placement(rec)
            self.wire_runs.pop(rec.wire_run, None)
            rec.attempt += 1
            self.wire_runs[rec.wire_run] = rec.run
            rec.outputs, rec.timings = {}, {}
            rec.placement = self._place_run(compiled, None, rec.wire_run)
            rec.workers = set(rec.placement.values())
            return out + self._dispatch(rec, compiled, rec.inputs)
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

    def _resume_waiting_runs(self, worker: str, graph: str | None = None) -> list[Send]:
        """Runs that wait for ``worker`` (those of ``graph`` only, when given) go again,
        except where its plan is not yet installed: they go once it is (staging.py)."""
        out: list[Send] = []
        for rec in [r for r in self.runs.values() if r.waiting_for == worker
                    and (graph is None or r.graph == graph)]:
            if self.is_staged(rec.graph, worker):
                continue
            compiled = self.graphs.get(rec.graph)
            if compiled is None:
                continue  # other workers still missing; the next registration tries again
            rec.waiting_for = None
            self._forget_placement(rec)
            rec.placement = self._place_run(compiled, None, rec.wire_run)
            rec.workers = set(rec.placement.values())
            out += self._dispatch(rec, compiled, rec.inputs)
        return out

    def _on_done(self, peer: bytes, msg: DoneMsg, arrays: dict[str, np.ndarray], now: float
                 ) -> list[Send]:
        rec = self.runs.get(self.wire_runs.get(msg.run, msg.run))
        if rec is None:
            self._hold_early(peer, msg, arrays, now)
            return []
        spec = self.graph_specs[rec.graph][1]
        # a direct run waits only for the nodes with graph outputs, but any node may fail it
        expected = rec.outstanding.get(msg.node) or (
            rec.placement.get(msg.node) if rec.direct and not msg.ok else None)
        if msg.run != rec.wire_run or expected is None:
            return []  # a run that already failed or was cancelled, or an earlier attempt
        owner = self.workers.get(expected)
        if owner is None or owner.identity != peer:
            # only the worker the node runs on may finish it: dropped, and counted
            self.metrics.bad_messages.labels("unauthorized").inc()
            log.warning("dropped DONE for %s/%s from a connection that is not worker %s",
                        rec.run, msg.node, expected)
            return []
        if not msg.ok:
            worker = expected
            return self._fail_run(rec, make_error(
                msg.code or "function_failed",
                f"node {msg.node!r} on worker {worker!r} failed: {msg.message}",
                node=msg.node, worker=worker))
        worker = rec.outstanding.pop(msg.node)
        if msg.timings:  # a direct run's upstream nodes, which send no DONE of their own
            rec.timings.update({n: node_timing(t, rec.started_unix_us)
                                for n, t in msg.timings.items() if n in spec.nodes})
        mine = {g for g, ref in spec.outputs.items() if ref.partition(".")[0] == msg.node}
        rec.outputs.update({g: a for g, a in arrays.items() if g in mine})
        self.metrics.node_compute.labels(rec.graph, msg.node, worker).observe(msg.compute_us / 1e6)
        self.metrics.bytes.labels("worker_to_worker").inc(msg.bytes_out)
        own: dict[str, Any] = {"worker": worker, "compute_us": msg.compute_us,
                               "wait_us": msg.wait_us, "bytes_out": msg.bytes_out,
                               "done_us": int((now - rec.started) * 1e6)}
        if msg.end_unix_us is not None:  # the worker's clock, not when we heard of it
            own["start_unix_us"] = min(msg.start_unix_us or msg.end_unix_us, msg.end_unix_us)
            own["end_unix_us"] = msg.end_unix_us
        rec.timings[msg.node] = node_timing(own, rec.started_unix_us)
        if rec.outstanding:
            return []
        return self._finish_run(rec, now)

    def _forget_run(self, rec: RunRecord) -> None:
        if self.runs.pop(rec.run, None) is not None:
            self.metrics.runs_active.dec()
            self.admission.release(rec.client, rec.input_bytes)
        self.wire_runs.pop(rec.wire_run, None)
        self._forget_placement(rec)

    def _forget_placement(self, rec: RunRecord) -> None:
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
        if rec.detach:
            self.store.run_finished(rec.run, "done", timings=rec.timings)
            self.store.save_result(rec.run, rec.outputs)
            return []
        self._remember(rec, "done")
        if rec.direct and not rec.outputs:
            return []  # the client has its outputs from the workers already
        body["relayed"] = rec.direct  # outputs a worker could not send the client itself
        reply = ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, reply_to=rec.client_msg,
                         body=body)
        return [Send(rec.client, reply, rec.outputs, run=rec.run, owner=rec.owner,
                     graph=rec.graph)]

    def _remember(self, rec: RunRecord, state: str, error: dict[str, Any] | None = None
                  ) -> None:
        """A finished run that was not detached: in memory only, for QUERY runs (its
        timeline too, for QUERY runs with ``run``)."""
        self.recent.append({"run": rec.run, "graph": rec.graph, "state": state,
                            "started": time.time() - (time.monotonic() - rec.started),
                            "finished": time.time(), "error": error, "timings": rec.timings})

    def _fail_run(self, rec: RunRecord, exc: InteropError) -> list[Send]:
        self._forget_run(rec)
        self.finished_failed += 1
        self.metrics.runs.labels(rec.graph, exc.code.value).inc()
        log.warning("run %s failed: %s", rec.run, exc,
                    extra={"run": rec.run, "graph": rec.graph, "node": exc.node,
                           "worker": exc.worker, "code": exc.code.value})
        state = "cancelled" if isinstance(exc, RunCancelledError) else "failed"
        error = {"code": exc.code.value, "message": exc.message, **exc.details()}
        if rec.detach:
            self.store.run_finished(rec.run, state, error=error, timings=rec.timings)
        else:
            self._remember(rec, state, error)
        out = [Send(rec.client, error_reply(exc, rec.client_msg, rec.run))] if not rec.detach else []
        return out + self._cancel_on_workers(rec)

    def _cancel_on_workers(self, rec: RunRecord) -> list[Send]:
        """Tell the run's live workers to drop its pending inputs and ignore late data."""
        return [Send(w.identity, ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME,
                                            action="cancel", run=rec.wire_run))
                for w in (self.workers.get(n) for n in rec.workers) if w and w.alive]
