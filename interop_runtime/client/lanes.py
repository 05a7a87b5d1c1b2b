"""A direct path's same-host lanes (transport/lanes.py, SPEC section 20): one per worker
inbox on our host, beside the DEALER it was offered on.

Warming up a route, the client asks each such worker for a lane in its ``CONTROL ping``;
it dials what the answer offers, and once the worker acknowledges, a run's inputs go on
the lane and the worker sends the run's outputs back on it. Until then, and whenever a
lane cannot take a message, the DEALER carries it as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

from interop_runtime.transport.lanes import Lane, dial, lane_offer, supported, took_ack, unpack


class ClientLanes:
    def __init__(self, poller: zmq.Poller, enabled: bool) -> None:
        self.poller = poller
        self.enabled = enabled and supported()
        self.by_endpoint: dict[str, Lane] = {}
        self.by_fd: dict[int, Lane] = {}  # zmq.Poller reports a lane by its descriptor
        self.lost: set[str] = set()  # endpoints whose lane closed: ask them again

    def dial(self, endpoint: str, dealer: zmq.Socket[bytes], body: Any) -> None:
        """The answer to our ping offered a lane: dial it (once per endpoint)."""
        offer = lane_offer(body) if self.enabled else None
        if offer is None or endpoint in self.by_endpoint:
            return
        lane = dial(*offer)
        if lane is not None:
            lane.owner = dealer
            lane.on_close = self._closed
            self.by_endpoint[endpoint] = lane
            self.by_fd[lane.fd] = lane
            self.poller.register(lane.fd, zmq.POLLIN)

    def send(self, endpoint: str, frames: Sequence[Any]) -> bool:
        lane = self.by_endpoint.get(endpoint)
        return lane is not None and lane.send(frames)

    def read(self, lane: Lane) -> tuple[zmq.Socket[bytes], list[memoryview]] | None:
        """One message from a lane, with the DEALER it stands for (releases and errors go
        back on that); None for the acknowledgement, garbage, or nothing."""
        packet = lane.recv_packet()
        out = None
        if packet is not None and not took_ack(lane, packet):
            try:
                out = (lane.owner, unpack(packet))
            except ValueError:  # not our framing: the lane goes, the DEALER stays
                lane.close()
        if lane.closed:
            self.drop(lane)
        return out

    def read_all(self) -> list[tuple[zmq.Socket[bytes], list[memoryview]]]:
        """Everything the lanes hold now."""
        got = []
        for lane in list(self.by_endpoint.values()):
            while not lane.closed and (item := self.read(lane)) is not None:
                got.append(item)
        return got

    def forget(self, endpoint: str) -> None:
        lane = self.by_endpoint.get(endpoint)
        if lane is not None:
            self.drop(lane)

    def lane_at(self, fd: Any) -> Lane | None:
        return self.by_fd.get(fd) if isinstance(fd, int) else None

    def drop(self, lane: Lane) -> None:
        lane.close()

    def _closed(self, lane: Lane) -> None:
        """Out of the poller before the next poll (which may find the number reused)."""
        if self.by_fd.pop(lane.fd, None) is not None:
            self.poller.unregister(lane.fd)
        for endpoint in [e for e, mine in self.by_endpoint.items() if mine is lane]:
            del self.by_endpoint[endpoint]
            self.lost.add(endpoint)

    def close(self) -> None:
        for lane in list(self.by_endpoint.values()):
            self.drop(lane)
