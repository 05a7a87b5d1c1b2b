"""Direct runs: the client sends a graph's inputs to the workers that consume them and takes
its outputs from the workers that produce them (protocol/SPEC.md section 16). The
coordinator hears of the run in a small RUN without tensors and keeps its record, its
deadline and failure detection; it is off the data path, so a 2-worker chain is 3 hops.

One ``DirectPath`` per thread that owns sockets: the caller's SyncChannel, or the client's
I/O thread. Every DEALER to a worker carries the same random routing id, which is how a
producing worker addresses the outputs back to us. Tensors for a worker on our host go
through shared memory (client/memory.py); outputs sent to us that way are copied out and
released at once, so a result never pins a worker's segment, unless the run asked for
zero-copy outputs (client/views.py).
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from interop_runtime.client.lanes import ClientLanes
from interop_runtime.client.memory import ClientMemory
from interop_runtime.client.shared_inputs import SharedArrays
from interop_runtime.graph.placement import PoolView, Site, place
from interop_runtime.graph.signatures import check_array
from interop_runtime.transport.security import Security
from interop_runtime.transport.shm import host_key
from interop_runtime.transport.sockets import connect_dealer, readable, send_frames, send_msg
from interop_runtime.wire.codec import decode, encode, new_id
from interop_runtime.wire.errors import (
    BadHeaderError,
    InteropError,
    RunTimeoutError,
    UnknownTargetError,
    make_error,
)
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DataMsg,
    ErrorMsg,
    ReplyMsg,
    TensorSpec,
)

log = logging.getLogger("interop.client")

MAX_DIRECT_RUNS = 10_000  # runs one path collects at once
RETURN_WAIT_S = 0.005  # about what copying 32 MiB costs
WARM_TIMEOUT_S = 5.0


@dataclass
class Routes:
    """A QUERY routes answer: where each graph input goes, who sends each output."""

    graph: str
    routes_id: str
    inputs: dict[str, list[dict[str, Any]]]
    outputs: dict[str, dict[str, Any]]
    input_specs: dict[str, TensorSpec]
    # replica pools (SPEC section 19): the pool nodes, every replica, the other nodes' workers
    pools: PoolView = field(default_factory=PoolView)
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Routes | None:
        if not body.get("direct"):
            return None
        return cls(graph=body["graph"], routes_id=body["routes_id"], inputs=body["inputs"],
                   outputs=body["outputs"],
                   input_specs={k: TensorSpec.model_validate(v)
                                for k, v in body.get("input_specs", {}).items()},
                   pools=PoolView.from_wire(body.get("pools") or {}),
                   replicas=dict(body.get("replicas") or {}), fixed=dict(body.get("fixed") or {}))

    def workers(self) -> dict[str, str | None]:
        """Every worker endpoint a run touches -> its inbox's CURVE key."""
        found = {r["endpoint"]: r.get("public_key") for rs in self.inputs.values() for r in rs}
        found.update({r["endpoint"]: r.get("public_key") for r in self.outputs.values()})
        found.update({r["endpoint"]: r.get("public_key") for r in self.replicas.values()})
        return found

    def hosts(self) -> dict[str, str | None]:
        """Every worker endpoint a run touches -> its host key (None: another host)."""
        every = [r for rs in self.inputs.values() for r in rs] + list(self.outputs.values())
        return {r["endpoint"]: r.get("host") for r in [*every, *self.replicas.values()]}

    def sites(self) -> dict[str, Site]:
        every = [r for rs in self.inputs.values() for r in rs] + list(self.outputs.values())
        every += list(self.replicas.values())
        return {r["worker"]: Site.of(r.get("host"), r.get("endpoint")) for r in every}


class Inflight:
    """Runs in flight per worker, from this client (all its threads): the load that
    placing a run on a replica goes by."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.rng = random.Random()

    def place(self, routes: Routes, origin: Site) -> dict[str, str] | None:
        """A new run's replicas, counted in flight at once; ``add(..., -1)`` when it ends."""
        if not routes.pools.order:
            return None
        with self._lock:
            chosen = place(routes.pools, routes.fixed, self.counts, routes.sites(), origin,
                           self.rng)
            for w in set(chosen.values()):
                self.counts[w] += 1
            return chosen

    def add(self, workers: set[str], delta: int) -> None:
        with self._lock:
            for w in workers:
                self.counts[w] += delta
                if self.counts[w] <= 0:
                    del self.counts[w]


@dataclass
class DirectRun:
    run: str
    graph: str
    msg_id: str  # the RUN's id: the coordinator's answers refer to it
    wanted: set[str]
    deadline: float
    started: float = field(default_factory=time.monotonic)
    started_unix_us: int = field(default_factory=lambda: time.time_ns() // 1000)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: set[str] = field(default_factory=set)
    msg_ids: list[str] = field(default_factory=list)  # what we sent for it
    place: dict[str, str] = field(default_factory=dict)  # pool node -> its replica
    placed: set[str] = field(default_factory=set)  # replicas counted in flight for it
    copy: bool = True  # False: shared-memory outputs stay in the worker's segment
    pinned: list[Any] = field(default_factory=list)  # its inputs, alive until it ends

    @property
    def complete(self) -> bool:
        return self.wanted <= set(self.outputs)

    def body(self) -> dict[str, Any]:
        """The run's record as the coordinator would reply it; ``done_us`` from each node's
        own clock (workers on other hosts: as good as the clocks agree)."""
        timings = {}
        for node, t in self.timings.items():
            t = dict(t)
            end = t.pop("end_unix_us", None)
            if isinstance(end, int):
                t["done_us"] = max(0, end - self.started_unix_us)
            timings[node] = t
        return {"run": self.run, "graph": self.graph, "timings": timings,
                "elapsed_us": int((time.monotonic() - self.started) * 1e6)}


class DirectPath:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], security: Security | None,
                 max_message_bytes: int | None, poller: zmq.Poller,
                 inflight: Inflight | None = None,
                 shared_inputs: SharedArrays | None = None) -> None:
        self.ctx, self.security, self.max_bytes, self.poller = (ctx, security,
                                                                 max_message_bytes, poller)
        self.inflight = inflight or Inflight()
        self.identity = secrets.token_bytes(16)
        self.host = host_key()
        self.memory = ClientMemory(self.host, shared_inputs)
        # lanes go with shared memory: both need the workers' host to be ours
        self.lanes = ClientLanes(poller, enabled=self.host is not None)
        self.sockets: dict[str, zmq.Socket[bytes]] = {}
        self.endpoint_of: dict[zmq.Socket[bytes], str] = {}
        self.warm: set[str] = set()
        self.runs: dict[str, DirectRun] = {}
        self.by_msg: dict[str, str] = {}  # id of a DATA or RUN we sent -> its run

    # --- sockets ---------------------------------------------------------------------------

    def socket(self, endpoint: str, key: str | None) -> zmq.Socket[bytes]:
        sock = self.sockets.get(endpoint)
        if sock is None:
            sock = connect_dealer(self.ctx, endpoint, identity=self.identity,
                                  max_message_bytes=self.max_bytes, security=self.security,
                                  server_key=key)
            self.sockets[endpoint], self.endpoint_of[sock] = sock, endpoint
            self.poller.register(sock, zmq.POLLIN)
        return sock

    def warm_up(self, routes: Routes) -> list[tuple[DirectRun, InteropError | None]]:
        """Ping every worker of the routes once, so that each knows our routing id before
        it has outputs for us (otherwise they would go the slow way, via the coordinator).
        Returns what other runs' messages, read meanwhile, completed or failed."""
        waiting: dict[str, tuple[zmq.Socket[bytes], str]] = {}
        self.warm -= self.lanes.lost  # a lane that closed: ask for another
        self.lanes.lost.clear()
        hosts = routes.hosts()
        for endpoint, key in routes.workers().items():
            if endpoint not in self.warm:
                sock = self.socket(endpoint, key)
                same_host = self.lanes.enabled and hosts.get(endpoint) == self.host
                ping = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", action="ping",
                                  args={"lane": True} if same_host else {})
                waiting[endpoint] = (sock, ping.id)
                send_msg(sock, ping)
        events = []
        deadline = time.monotonic() + WARM_TIMEOUT_S
        for endpoint, (sock, ping_id) in waiting.items():
            while (left := deadline - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
                frames = sock.recv_multipart(copy=False)
                try:
                    msg = decode(frames, max_bytes=self.max_bytes or (1 << 31)).msg
                except InteropError:
                    continue
                if isinstance(msg, (ReplyMsg, ErrorMsg)) and msg.reply_to == ping_id:
                    self.warm.add(endpoint)  # an answer of any kind: the route is there
                    if isinstance(msg, ReplyMsg):
                        self.lanes.dial(endpoint, sock, msg.body)
                    break
                event = self.on_frames(sock, frames)  # another run's: not lost
                if event is not None:
                    events.append(event)
        return events

    # --- a run -----------------------------------------------------------------------------

    def drain(self) -> list[tuple[DirectRun, InteropError | None]]:
        """Take what the workers sent while nobody listened (releases, late outputs), so
        that the segments they hand back are reused rather than new ones made."""
        self.memory.dropped.flush()
        done = []
        for sock in list(self.sockets.values()):
            while readable(sock):  # no poller built per socket
                event = self.on_frames(sock, sock.recv_multipart(copy=False))
                if event is not None:
                    done.append(event)
        for dealer, frames in self.lanes.read_all():
            event = self.on_frames(dealer, frames)
            if event is not None:
                done.append(event)
        return done

    def read(self, sock: Any) -> tuple[DirectRun, InteropError | None] | None:
        """One message from a worker's DEALER or lane that the poller found ready."""
        if isinstance(sock, int):  # a lane's descriptor (gone already if it closed meanwhile)
            lane = self.lanes.lane_at(sock)
            got = self.lanes.read(lane) if lane is not None else None
            return self.on_frames(*got) if got is not None else None
        return self.on_frames(sock, sock.recv_multipart(copy=False))

    def await_returns(self, arrays: Mapping[str, Any], timeout_s: float = RETURN_WAIT_S
                      ) -> list[tuple[DirectRun, InteropError | None]]:
        """Shared input arrays lent to a run that ended here come back once the releases
        pass back through its workers (an output that forwarded ours, dropped just now):
        read those releases, up to ``timeout_s``, rather than copy the arrays. Returns
        what other runs' messages, read meanwhile, completed or failed."""
        if not self.sockets or not self.memory.returning(arrays, self.runs):
            return []
        self.memory.dropped.flush()  # the releases that start the way back, if not sent yet
        deadline = time.monotonic() + timeout_s
        poller = zmq.Poller()
        for sock in [*self.sockets.values(), *self.lanes.by_fd]:
            poller.register(sock, zmq.POLLIN)
        events = []
        while (left := deadline - time.monotonic()) > 0 and self.memory.returning(
                arrays, self.runs):
            for sock, _ in poller.poll(max(1, int(left * 1000))):
                event = self.read(sock)
                if event is not None:
                    events.append(event)
        return events

    @staticmethod
    def check_inputs(routes: Routes, arrays: Mapping[str, Any]) -> None:
        """What the coordinator checks of a run's inputs, checked here before anything is
        sent: a direct run's inputs never pass through it."""
        for name in arrays:
            if name not in routes.inputs:
                raise UnknownTargetError(f"graph {routes.graph!r} has no input {name!r} "
                                         f"(inputs: {', '.join(routes.inputs) or 'none'})",
                                         field=name)
        for name, spec in routes.input_specs.items():
            if name not in arrays:
                raise BadHeaderError(f"graph input {name!r} is missing", field=name)
            check_array(spec, arrays[name], where=f"graph input {name!r}")

    def start(self, routes: Routes, run: str, msg_id: str, arrays: Mapping[str, Any],
              timeout_s: float, *, copy: bool = True) -> DirectRun:
        """Place the run on replicas (``.place``, which its RUN must carry) and send its
        (checked) inputs to their workers; a pool node's only to its placed replica.
        ``copy=False``: its shared-memory outputs come back as read-only views."""
        self.memory.expire()
        if len(self.runs) >= MAX_DIRECT_RUNS:
            self.expire(time.monotonic(), force=True)
        rec = DirectRun(run=run, graph=routes.graph, msg_id=msg_id, wanted=set(routes.outputs),
                        deadline=time.monotonic() + timeout_s, copy=copy,
                        pinned=list(arrays.values()))
        batches: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        keys: dict[str, tuple[str | None, str | None]] = {}
        place = rec.place = self.inflight.place(routes, Site(self.host)) or {}
        rec.placed = set(place.values())  # counted in flight until finish()
        for gin, targets in routes.inputs.items():
            for t in targets:
                if t.get("pool") and place.get(t["node"]) != t["worker"]:
                    continue
                batches.setdefault((t["endpoint"], t["node"]), {})[t["input"]] = arrays[gin]
                keys[t["endpoint"]] = (t.get("public_key"), t.get("host"))
        self.runs[run] = rec
        self.by_msg[msg_id] = run
        rec.msg_ids.append(msg_id)
        for (endpoint, node), tensors in batches.items():
            key, host = keys[endpoint]
            framed, shared = self.memory.split(tensors, host, (endpoint, run))
            msg = DataMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", graph=routes.graph,
                          run=run, node=node, client_host=self.host, place=dict(place) or None)
            self.by_msg[msg.id] = run
            rec.msg_ids.append(msg.id)
            rec.endpoints.add(endpoint)
            frames = encode(msg, framed, shared=shared)
            sock = self.socket(endpoint, key)
            if not self.lanes.send(endpoint, frames):
                send_frames(sock, frames)
        return rec

    def on_frames(self, sock: zmq.Socket[bytes], frames: list[Any]
                  ) -> tuple[DirectRun, InteropError | None] | None:
        """One message from a worker: a run that is now complete (or failed), or None."""
        try:
            env = decode(frames, max_bytes=self.max_bytes or (1 << 31))
        except InteropError as exc:
            log.warning("undecodable message from a worker: %s", exc)
            return None
        msg, endpoint = env.msg, self.endpoint_of.get(sock, "")
        if isinstance(msg, DataMsg):
            rec = self.runs.get(msg.run)
            arrays = dict(env.arrays)
            if env.shared:
                arrays.update(self.memory.take(sock, msg.run, env.shared,
                                               copy=rec is None or rec.copy))
            if rec is None:
                return None  # a run we gave up on
            rec.outputs.update({n: a for n, a in arrays.items() if n in rec.wanted})
            rec.timings.update(msg.timings or {})
            return (rec, None) if rec.complete else None
        if isinstance(msg, ControlMsg) and msg.action == "release":
            self.memory.released(msg.args.get("handles"), (endpoint, msg.run or ""))
        elif isinstance(msg, ErrorMsg):
            run = msg.run or self.by_msg.get(msg.reply_to or "")
            rec = self.runs.get(run or "")
            if rec is not None:
                return rec, make_error(msg.code, msg.message, field=msg.field, node=msg.node,
                                       edge=msg.edge, worker=msg.worker)
        return None

    def relayed(self, rec: DirectRun, arrays: Mapping[str, np.ndarray]) -> bool:
        """Outputs the coordinator relayed (a worker could not reach us); True if complete."""
        rec.outputs.update({n: a for n, a in arrays.items() if n in rec.wanted})
        return rec.complete

    def finish(self, rec: DirectRun, *, failed: bool = False) -> None:
        """Forget a run; after a failure, take back the segments its workers will not
        release."""
        if self.runs.pop(rec.run, None) is not None:
            self.inflight.add(rec.placed, -1)
        for msg_id in rec.msg_ids:
            self.by_msg.pop(msg_id, None)
        rec.pinned.clear()
        if failed:
            self.memory.forget(rec.endpoints, rec.run)

    def run_of(self, msg_id: str | None) -> DirectRun | None:
        return self.runs.get(self.by_msg.get(msg_id or "", ""))

    def expire(self, now: float, *, force: bool = False) -> list[tuple[DirectRun, InteropError]]:
        """Runs past their deadline (the coordinator's timeout normally ends them first).
        Also sends the releases of zero-copy outputs dropped since the last call, and takes
        back leases of our segments that no worker released in time."""
        self.memory.dropped.flush()
        self.memory.expire(now)
        late = [r for r in self.runs.values() if now > r.deadline + 5.0]
        if force and not late:
            late = [min(self.runs.values(), key=lambda r: r.deadline)]
        out = []
        for rec in late:
            self.finish(rec, failed=True)
            out.append((rec, RunTimeoutError(f"run {rec.run} got no outputs in time")))
        return out

    def close(self) -> None:
        self.memory.dropped.flush()
        self.lanes.close()
        for sock in self.sockets.values():
            self.poller.unregister(sock)
            sock.close(0)
        self.sockets.clear()
        self.memory.close()
