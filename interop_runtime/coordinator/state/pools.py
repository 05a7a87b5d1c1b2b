"""Replica pools (protocol/SPEC.md section 19): which replicas a graph routes to, where
each run is placed, and draining a replica so that it can leave without losing a run."""

from __future__ import annotations

import logging
import random

from interop_runtime.coordinator.state.base import StateTables
from interop_runtime.coordinator.state.records import NAME, Send, reply
from interop_runtime.graph.compile import CompiledGraph
from interop_runtime.graph.placement import Site, fallback_replica, place
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import BadHeaderError, InteropError, UnknownTargetError
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg

log = logging.getLogger("interop.coordinator")

DRAIN_GRACE_S = 1.0  # a drained replica waits this long for direct runs still on their way


class Pools(StateTables):
    _rng = random.Random()

    def _recompile_pool(self, pool: str) -> list[Send]:
        """A replica joined, left or began draining: compile the pool's graphs again (new
        routes, a new routes_id that makes direct clients read them again)."""
        out: list[Send] = []
        for name, (version, spec) in self.graph_specs.items():
            if pool not in {s.pool for s in spec.nodes.values()}:
                continue
            try:
                compiled = self._compile(spec, version)
            except InteropError as exc:  # no replica left: runs are refused until one joins
                log.warning("graph %s cannot run: %s", name, exc.message)
                self.graphs.pop(name, None)
                continue
            self.graphs[name] = compiled
            out += self._send_plans(compiled, None)
        return out

    def _place_run(self, compiled: CompiledGraph, requested: dict[str, str] | None, run: str
                   ) -> dict[str, str]:
        """Node -> worker for a new run. A direct run's client chose its replicas: each must
        be one the node's routes list, and alive. Otherwise we choose, least loaded first."""
        if not compiled.replicas:
            if requested:
                raise BadHeaderError("this graph has no pool nodes to place", field="place")
            return compiled.fixed()
        if requested is None:
            view = compiled.pool_view()
            load = {w: len(self.runs_by_worker.get(w, ())) for ws in view.replicas.values()
                    for w in ws}
            sites = {n: Site.of(w.host, w.endpoint) for n, w in self.workers.items() if w.alive}
            return compiled.placement(place(view, compiled.fixed(), load, sites, Site(),
                                            self._rng))
        chosen: dict[str, str] = {}
        for node, worker in requested.items():
            if node not in compiled.members:
                raise BadHeaderError(f"node {node!r} does not run on a pool", field="place",
                                     node=node)
            w = self.workers.get(worker)
            if worker not in compiled.members[node] or w is None or not w.alive:
                raise UnknownTargetError(f"node {node!r} cannot run on {worker!r}: it is not a "
                                         f"live replica of pool {compiled.spec.nodes[node].pool!r}"
                                         f"; ask QUERY routes again", field="routes", node=node)
            chosen[node] = worker
        for node, replicas in compiled.replicas.items():
            chosen.setdefault(node, fallback_replica(run, replicas))
        return compiled.placement(chosen)

    def _on_drain(self, peer: bytes, msg: ControlMsg, now: float) -> list[Send]:
        """Stop placing runs on a replica; shut it down once its runs are done."""
        name = msg.args.get("worker")
        w = self.workers.get(name) if isinstance(name, str) else None
        if w is None or not w.alive:
            raise UnknownTargetError(f"no live worker named {name!r}", field="args.worker",
                                     worker=name if isinstance(name, str) else None)
        if w.pool is None:
            raise BadHeaderError(f"worker {w.name!r} is in no pool: only replicas drain",
                                 field="args.worker", worker=w.name)
        out: list[Send] = []
        if w.draining_since is None:
            w.draining_since = now
            log.info("draining replica %s of pool %s", w.name, w.pool)
            out += self._recompile_pool(w.pool)
        return [*out, Send(peer, reply(msg, {"worker": w.name, "pool": w.pool, "draining": True,
                                             "outstanding": len(self.runs_by_worker.get(
                                                 w.name, ()))}))]

    def _shut_drained(self, now: float) -> list[Send]:
        """Drained replicas with nothing left to do are told to stop (tick)."""
        out = []
        for w in self.workers.values():
            if (w.alive and w.draining_since is not None and now - w.draining_since > DRAIN_GRACE_S
                    and not self.runs_by_worker.get(w.name)):
                w.draining_since = float("inf")  # told once
                out.append(Send(w.identity, ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME,
                                                       dst=w.name, action="shutdown")))
        return out
