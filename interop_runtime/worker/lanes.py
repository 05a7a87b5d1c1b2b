"""A worker's same-host lanes (transport/lanes.py, SPEC section 20): the ones peers and
clients dialled into us, and the ones we dialled to the peers we send DATA to.

A lane only carries what the ZeroMQ connection it was offered on would: messages that come
on one are handled as that connection's (routing identity and CURVE key), and messages we
send on one could as well have gone by ZeroMQ, which takes over whenever a lane cannot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from interop_runtime.transport.lanes import (
    Lane,
    LaneServer,
    dial,
    lane_offer,
    supported,
    took_ack,
    unpack,
)
from interop_runtime.transport.sockets import send_msg
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg, ReplyMsg

log = logging.getLogger("interop.worker")

MAX_BURST = 64  # packets read from one lane before the loop polls again
MAX_ASKED = 4096
ASK_AGAIN_S = 5.0  # endpoints we asked for a lane (bounded by our plans' routes in practice)

Deliver = Callable[[Lane, list[memoryview]], None]


class WorkerLanes:
    def __init__(self, poller: zmq.Poller, enabled: bool) -> None:
        self.poller = poller
        self.server: LaneServer | None = None
        if enabled and supported():
            try:
                self.server = LaneServer()
            except OSError as exc:  # no private directory: ZeroMQ only, as across hosts
                log.warning("same-host lanes are off: %s", exc)
        # zmq.Poller reports a plain socket by its descriptor: what each one is
        self.by_fd: dict[int, Lane | LaneServer] = {}
        if self.server is not None:
            self._watch(self.server)
        self.out: dict[str, Lane] = {}  # endpoint -> the lane we dialled to its inbox
        # ping id -> (endpoint, until when we wait for its answer before asking again)
        self.asked: dict[str, tuple[str, float]] = {}

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, int) and obj in self.by_fd

    def _watch(self, item: Lane | LaneServer) -> None:
        fd = item.fileno()
        self.by_fd[fd] = item
        self.poller.register(fd, zmq.POLLIN)
        if isinstance(item, Lane):
            item.on_close = self._unwatch

    def _unwatch(self, lane: Lane) -> None:
        """A lane closed (by us, its peer, or a failed send): out of the poller before the
        next poll, which may find its descriptor's number reused, and out of every table,
        so that the peer can ask for another."""
        if self.by_fd.get(lane.fd) is lane:
            del self.by_fd[lane.fd]
            self.poller.unregister(lane.fd)
        if self.server is not None:
            self.server.dropped(lane)
        for endpoint in [e for e, mine in self.out.items() if mine is lane]:
            del self.out[endpoint]

    def stats(self) -> dict[str, int] | None:
        """Lanes bound to us, and ours bound (None: lanes are off here)."""
        if self.server is None:
            return None
        return {"in": len(self.server.by_peer),
                "out": sum(1 for lane in self.out.values() if lane.bound)}

    # --- offering (we are the receiver) -------------------------------------------------

    def offer(self, peer: bytes | None, key: str | None) -> dict[str, str] | None:
        if self.server is None or peer is None:
            return None
        return self.server.offer(peer, key)

    def to_client(self, peer: bytes) -> Lane | None:
        return self.server.by_peer.get(peer) if self.server is not None else None

    # --- asking (we send DATA to a peer on our host) -------------------------------------

    def to_peer(self, endpoint: str, dealer: zmq.Socket[bytes]) -> Lane | None:
        """The bound lane to ``endpoint``; the first call asks for one (over ``dealer``)."""
        lane = self.out.get(endpoint)
        if lane is not None and lane.bound:
            return lane
        if lane is None and self.server is not None and not self._waiting_for(endpoint):
            ping = ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="lane", action="ping",
                              args={"lane": True})
            try:
                send_msg(dealer, ping, flags=zmq.NOBLOCK)
                self.asked[ping.id] = (endpoint, time.monotonic() + ASK_AGAIN_S)
            except zmq.ZMQError:
                pass
        return None

    def _waiting_for(self, endpoint: str) -> bool:
        """Whether a request for a lane to ``endpoint`` is still out (an unanswered one is
        given up after ASK_AGAIN_S, so a peer that died meanwhile is asked again)."""
        now = time.monotonic()
        for ping_id, (asked, until) in list(self.asked.items()):
            if now > until:
                del self.asked[ping_id]
            elif asked == endpoint:
                return True
        return len(self.asked) >= MAX_ASKED

    def answered(self, msg: ReplyMsg) -> bool:
        """A peer's answer to our lane request: dial what it offers. False: not one."""
        asked = self.asked.pop(msg.reply_to or "", None)
        if asked is None:
            return False
        endpoint = asked[0]
        offer = lane_offer(msg.body)
        if offer is not None and endpoint not in self.out:
            lane = dial(*offer)
            if lane is not None:
                self.out[endpoint] = lane
                self._watch(lane)
        return True

    def forget(self, endpoint: str) -> None:
        """The peer's inbox changed (a new key, a restart): its lane goes too."""
        lane = self.out.pop(endpoint, None)
        if lane is not None:
            self._drop(lane)

    # --- reading ------------------------------------------------------------------------

    def on_ready(self, fd: int, deliver: Deliver) -> None:
        """Whatever descriptor ``fd`` (the listening socket or a lane) has for us now."""
        item = self.by_fd[fd]
        if isinstance(item, LaneServer):
            accepted = item.accept()
            if accepted is not None:
                self._watch(accepted)
            return
        lane = item
        for _ in range(MAX_BURST):  # then the other sockets get their turn
            packet = lane.recv_packet()
            if packet is None:
                break
            if lane.outgoing:  # ours: only the acknowledgement is expected back
                took_ack(lane, packet)
                continue
            if not lane.bound:
                assert self.server is not None
                if not self.server.hello(lane, packet):
                    break
                continue
            try:
                frames = unpack(packet)
            except ValueError as exc:  # not our framing: the lane goes, ZeroMQ stays
                log.warning("closing a lane that sent a malformed packet: %s", exc)
                lane.close()
                break
            deliver(lane, frames)
        if lane.closed:
            self._drop(lane)

    def expire(self, now: float) -> None:
        if self.server is not None:
            for lane in self.server.expire(now):
                self._drop(lane)

    def _drop(self, lane: Lane) -> None:
        lane.close()  # and so out of the poller and the tables (_unwatch)

    def close(self) -> None:
        for lane in list(self.out.values()):
            lane.close()
        if self.server is not None:
            self.server.close()
