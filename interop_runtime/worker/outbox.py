"""Where a finished node's outputs go: to the consumers' inboxes, to a direct run's client,
and, as a small DONE, to the coordinator (protocol/SPEC.md sections 8 and 16).

A direct run's graph outputs go straight back to its client over our inbox, which the
client dialled. If it has not (or its queue is full), they ride on the DONE instead and
the coordinator relays them: slower, never lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from interop_runtime.graph.placement import fallback_replica
from interop_runtime.transport.sockets import send_frames, send_msg
from interop_runtime.wire.codec import encode, new_id
from interop_runtime.wire.errors import BusyError, InteropError
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg, DataMsg, DoneMsg
from interop_runtime.wire.payloads import Route
from interop_runtime.worker.dataplane import DataPlane
from interop_runtime.worker.lanes import WorkerLanes
from interop_runtime.worker.peers import PeerSockets
from interop_runtime.worker.state import Ready, RunMeta

log = logging.getLogger("interop.worker")

Local = tuple[str, str, str, dict[str, np.ndarray], RunMeta]  # DATA for our own nodes


class Outbox:
    def __init__(self, name: str, endpoint: str, inbox: zmq.Socket[bytes],
                 coord: zmq.Socket[bytes], peers: PeerSockets, plane: DataPlane,
                 lanes: WorkerLanes) -> None:
        self.name, self.endpoint = name, endpoint
        self.inbox, self.coord, self.peers, self.plane = inbox, coord, peers, plane
        self.lanes = lanes
        self.metrics: Any = None  # the host's WorkerMetrics: bytes sent are counted here

    def deliver(self, ready: Ready, outputs: Mapping[str, np.ndarray], compute_us: int
                ) -> list[Local]:
        """Send one node's outputs on; returns the DATA addressed to our own nodes."""
        plan, run, graph, meta = ready.plan, ready.run, ready.graph, ready.meta
        batches: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        hosts: dict[str, str | None] = {}
        for out, routes in plan.routes.items():
            for route in routes:
                if route.pool and route.worker != self._replica(route.node, routes, ready):
                    continue  # a pool node: only the replica this run is placed on
                batches.setdefault((route.endpoint, route.node), {})[route.input] = outputs[out]
                hosts[route.endpoint] = route.host
        bytes_out = sum(a.nbytes for (ep, _), ts in batches.items() if ep != self.endpoint
                        for a in ts.values())
        end_us = time.time_ns() // 1000  # the client makes done_us of it
        wait_us = int(ready.wait_s * 1e6)
        timing = {"worker": self.name, "compute_us": compute_us,
                  "wait_us": wait_us, "bytes_out": bytes_out,
                  "start_unix_us": end_us - compute_us, "end_unix_us": end_us}
        timings = {**meta.timings, plan.node: timing} if meta.client else None
        local: list[Local] = []
        for (endpoint, node), tensors in batches.items():
            if endpoint == self.endpoint:
                local.append((graph, run, node, self.plane.owned(tensors),
                              RunMeta(meta.client, meta.client_host, dict(timings or {}),
                                      place=meta.place)))
                continue
            msg = DataMsg(v=PROTOCOL_VERSION, id=new_id(), src=self.name, graph=graph, run=run,
                          node=node, client=meta.client, client_host=meta.client_host,
                          timings=timings, place=meta.place or None)
            try:  # never block on a stalled peer: its queue full fails this run, not the worker
                framed, shared = self.plane.split(tensors, hosts[endpoint], (endpoint, run),
                                                  meta.leases)
                frames = encode(msg, framed, shared=shared)
                dealer = self.peers.get(endpoint)
                lane = self.lanes.to_peer(endpoint, dealer) if hosts[endpoint] is not None \
                    and hosts[endpoint] == self.plane.host else None
                if lane is None or not lane.send(frames):
                    send_frames(dealer, frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                self.fail(graph, run, plan.node, BusyError(
                    f"the inbox at {endpoint} is not keeping up (its queue is full)",
                    node=node))
                return local
            except InteropError as exc:  # the shared-memory pool is full
                self.fail(graph, run, plan.node, exc)
                return local
        results = {g: outputs[out] for out, gouts in plan.graph_outputs.items() for g in gouts}
        if self.metrics is not None:
            self.metrics.bytes_out += bytes_out + sum(a.nbytes for a in results.values())
        if meta.client and not results:
            return local  # a direct run: only nodes with graph outputs (or failures) report
        if results and meta.client and self._to_client(ready, results, timings):
            results = {}
        send_msg(self.coord, DoneMsg(v=PROTOCOL_VERSION, id=new_id(), src=self.name, graph=graph,
                                     run=run, node=plan.node, compute_us=compute_us,
                                     wait_us=wait_us, bytes_out=bytes_out,
                                     timings=timings, start_unix_us=end_us - compute_us,
                                     end_unix_us=end_us), self.plane.owned(results))
        return local

    @staticmethod
    def _replica(node: str, routes: list[Route], ready: Ready) -> str:
        """The replica of pool node ``node`` that this run is placed on; a run without a
        placement for it (or naming no replica of it) gets the one every producer derives
        from the run id."""
        replicas = [r.worker for r in routes if r.node == node]
        placed = ready.meta.place.get(node)
        return placed if placed in replicas else fallback_replica(ready.run, replicas)

    def _to_client(self, ready: Ready, results: dict[str, np.ndarray],
                   timings: dict[str, Any] | None) -> bool:
        """Graph outputs straight to the direct run's client; False if it cannot be reached."""
        client = ready.meta.client
        assert client is not None
        holder = (client, ready.run)
        try:
            framed, shared = self.plane.split(results, ready.meta.client_host, holder,
                                              ready.meta.leases, to_client=True)
        except InteropError:  # clients hold their share of the pool: frames, straight
            framed, shared = self.plane.split(results, None, holder, ready.meta.leases)
        msg = DataMsg(v=PROTOCOL_VERSION, id=new_id(), src=self.name, graph=ready.graph,
                      run=ready.run, node=ready.plan.node, timings=timings)
        peer = bytes.fromhex(client)
        frames = encode(msg, framed, shared=shared)
        lane = self.lanes.to_client(peer)
        if lane is not None and lane.send(frames):
            return True
        try:
            send_frames(self.inbox, frames, peer=peer, flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # not connected (ROUTER_MANDATORY), or its queue is full
            log.info("client of run %s not reachable (%s); the coordinator relays", ready.run,
                     exc)
            self.plane.cancel_holder(holder)
            return False

    def release(self, by_sender: Mapping[bytes, list[Any]], run: str) -> None:
        """Hand segments back to whoever sent them, on the connection they came on."""
        for sender, handles in by_sender.items():
            msg = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src=self.name, action="release",
                             run=run, args={"handles": [h.to_wire() for h in handles]})
            try:
                send_msg(self.inbox, msg, peer=sender, flags=zmq.NOBLOCK)
            except zmq.ZMQError:  # the sender is gone; its pool went with it
                pass

    def fail(self, graph: str, run: str, node: str, exc: InteropError) -> None:
        log.warning("run %s: node %s failed: %s", run, node, exc.message,
                    extra={"run": run, "graph": graph, "node": node, "worker": self.name,
                           "code": exc.code.value})
        send_msg(self.coord, DoneMsg(v=PROTOCOL_VERSION, id=new_id(), src=self.name, graph=graph,
                                     run=run, node=node, ok=False, code=exc.code.value,
                                     message=exc.message))
