"""DEALERs to peer workers' inboxes: opened on first use, pinned to the CURVE key that the
installed plans give for each endpoint, and reopened when a plan brings a new key."""

from __future__ import annotations

from collections.abc import Callable

import zmq

from interop_runtime.transport.security import Security
from interop_runtime.transport.sockets import connect_dealer
from interop_runtime.wire.payloads import WorkerPlan


class PeerSockets:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], security: Security | None,
                 max_message_bytes: int, poller: zmq.Poller,
                 forget: Callable[[str], None] = lambda endpoint: None) -> None:
        self.ctx, self.security, self.max_bytes, self.poller = ctx, security, max_message_bytes, poller
        self.forget = forget  # a peer's inbox changed: what else we hold for it goes too
        self.sockets: dict[str, zmq.Socket[bytes]] = {}
        self.keys: dict[str, str | None] = {}  # endpoint -> CURVE key, from plans
        self.endpoints: dict[zmq.Socket[bytes], str] = {}  # socket -> endpoint it dials

    def learn(self, plan: WorkerPlan) -> None:
        for node in plan.nodes:
            for routes in node.routes.values():
                for route in routes:
                    if self.keys.get(route.endpoint, route.public_key) != route.public_key:
                        sock = self.sockets.pop(route.endpoint, None)  # the peer's key changed
                        if sock is not None:
                            self.endpoints.pop(sock, None)
                            self.poller.unregister(sock)
                            sock.close(0)
                        self.forget(route.endpoint)
                    self.keys[route.endpoint] = route.public_key

    def get(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self.sockets.get(endpoint)
        if sock is None:
            sock = self.sockets[endpoint] = connect_dealer(
                self.ctx, endpoint, max_message_bytes=self.max_bytes, security=self.security,
                server_key=self.keys.get(endpoint))
            self.poller.register(sock, zmq.POLLIN)
            self.endpoints[sock] = endpoint
        return sock

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(0)
        self.sockets.clear()
