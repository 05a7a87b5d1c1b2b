"""Plans for a worker that (re)joins: it installs its own before anyone routes to it.

A restarted worker, a new replica, or a worker whose functions changed gets its plans for
the graphs it takes part in *first*. Only once it acknowledges a graph's plan (or the
request times out) does the graph's new compilation become the one runs and QUERY routes
use, do the other workers get their new plans, and do runs waiting for the worker resume.
Before, everything went out at once, and a peer with its new plan could send the worker
DATA on a faster path than the coordinator's plan took: "no plan for graph" (SPEC §10.2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interop_runtime.coordinator.state.base import StateTables
from interop_runtime.coordinator.state.records import Send, plan_msg
from interop_runtime.wire.errors import InteropError
from interop_runtime.wire.messages import ErrorMsg, ReplyMsg

if TYPE_CHECKING:
    from interop_runtime.graph.compile import CompiledGraph

log = logging.getLogger("interop.coordinator")


@dataclass
class StagedPlan:
    graph: str
    worker: str
    identity: bytes  # the connection whose acknowledgement counts
    plan: dict[str, Any]  # what it was sent, so that the commit does not send it twice
    deadline: float


class Staging(StateTables):
    # id of the plan we sent -> what waits for its ack; one entry per (graph, worker)
    staged_plans: dict[str, StagedPlan]
    staged_by_pair: dict[tuple[str, str], str]
    # worker -> answers to clients' requests it served (a model load), held until its
    # staged plans settle: a load's reply comes once the graphs it affects run again
    parked: dict[str, list[Send]]
    invalid_graphs: dict[str, Any]  # the signatures' (signatures.py)

    def _reinstall_plans_for(self, worker: str, now: float) -> list[Send]:
        """A worker (re)joined: compile every graph it takes part in, where possible, and send
        it its plans; the rest of each graph follows its acknowledgement."""
        out: list[Send] = []
        pool = self.workers[worker].pool
        for name, (version, spec) in self.graph_specs.items():
            if worker not in {n.worker for n in spec.nodes.values()} and not (
                    pool and pool in {n.pool for n in spec.nodes.values()}):
                continue
            try:
                compiled = self._compile(spec, version)
            except InteropError:
                continue  # some other worker is not here yet; its registration retries
            plan = compiled.plans.get(worker)
            if plan is None:  # a draining replica, say: nothing of its own to install first
                out += self._commit(name, compiled)
                continue
            out.append(self._stage(name, worker, plan.model_dump(), now))
        return out

    def _stage(self, graph: str, worker: str, plan: dict[str, Any], now: float) -> Send:
        old = self.staged_by_pair.pop((graph, worker), None)
        if old is not None:  # registered again before it answered: the newer plan counts
            self.staged_plans.pop(old, None)
        w = self.workers[worker]
        ctl = plan_msg(worker, graph, plan)
        self.staged_plans[ctl.id] = StagedPlan(graph, worker, w.identity, plan,
                                               now + self.request_timeout_s)
        self.staged_by_pair[(graph, worker)] = ctl.id
        return Send(w.identity, ctl)

    def is_staged(self, graph: str, worker: str) -> bool:
        return (graph, worker) in self.staged_by_pair

    def park_reply(self, worker: str, send: Send) -> bool:
        """Hold ``send`` (a forwarded reply from ``worker``) while the worker has staged
        plans; False: it has none, send it now."""
        if not any(w == worker for _, w in self.staged_by_pair):
            return False
        self.parked.setdefault(worker, []).append(send)
        return True

    def _forget_staged(self, worker: str) -> list[Send]:
        """A worker lost: its staged plans settle now (without it), and what waited goes."""
        out: list[Send] = []
        for plan_id in [k for k, s in self.staged_plans.items() if s.worker == worker]:
            out += self._settle(plan_id)
        return out + self.parked.pop(worker, [])

    def _on_staged_ack(self, peer: bytes, msg: ReplyMsg | ErrorMsg) -> list[Send] | None:
        """The answer to a staged plan: the graph goes live. None: not an answer to one."""
        staged = self.staged_plans.get(msg.reply_to or "")
        if staged is None:
            return None
        if staged.identity != peer:  # a guessed id from another connection: not an answer
            self.metrics.bad_messages.labels("unauthorized").inc()
            return []
        if isinstance(msg, ErrorMsg):
            log.warning("worker %s refused its plan for graph %s: %s", staged.worker,
                        staged.graph, msg.message)
        return self._settle(msg.reply_to or "")

    def _expire_staged(self, now: float) -> list[Send]:
        """A worker that does not answer in time: its graph goes live anyway, as it would
        have before staging (a plan that never arrived fails that worker's nodes)."""
        out: list[Send] = []
        for plan_id in [k for k, s in self.staged_plans.items() if now > s.deadline]:
            out += self._settle(plan_id)
        return out

    def _settle(self, plan_id: str) -> list[Send]:
        staged = self.staged_plans.pop(plan_id)
        self.staged_by_pair.pop((staged.graph, staged.worker), None)
        out = self._go_live(staged)
        if not any(w == staged.worker for _, w in self.staged_by_pair):
            out += self.parked.pop(staged.worker, [])
        return out

    def _go_live(self, staged: StagedPlan) -> list[Send]:
        entry = self.graph_specs.get(staged.graph)
        if entry is None or staged.graph in self.invalid_graphs:
            return []  # dropped, or no longer fits, since
        version, spec = entry
        try:
            compiled = self._compile(spec, version)  # what is alive now, not at the staging
        except InteropError as exc:
            log.warning("graph %s cannot run: %s", staged.graph, exc.message)
            return []
        sent = {staged.worker: staged.plan}
        return (self._commit(staged.graph, compiled, sent)
                + self._resume_waiting_runs(staged.worker, staged.graph))

    def _commit(self, graph: str, compiled: CompiledGraph,
                sent: dict[str, dict[str, Any]] | None = None) -> list[Send]:
        """``compiled`` becomes the graph's live compilation; every worker not already sent
        the same plan gets its own."""
        self.graphs[graph] = compiled
        out = []
        for worker, plan in compiled.plans.items():
            dumped = plan.model_dump()
            if (sent or {}).get(worker) == dumped:
                continue
            out.append(Send(self.workers[worker].identity, plan_msg(worker, graph, dumped)))
        return out
