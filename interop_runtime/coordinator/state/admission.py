"""Admission: how many runs may be in flight, in all and per client connection, so that
one client cannot hog the coordinator."""

from __future__ import annotations

from collections import defaultdict

from interop_runtime.wire.errors import BusyError


class Admission:
    def __init__(self, max_runs_in_flight: int = 10_000, max_runs_per_client: int = 1_000
                 ) -> None:
        self.max_runs_in_flight = max_runs_in_flight
        self.max_runs_per_client = max_runs_per_client  # per connection: one client can't hog
        self.runs_by_client: dict[bytes, int] = defaultdict(int)
        self.in_flight = 0

    def check(self, client: bytes) -> None:
        """Raise ``BusyError`` unless one more run from ``client`` fits."""
        if self.in_flight >= self.max_runs_in_flight:
            raise BusyError(f"{self.in_flight} runs are in flight, the most this coordinator "
                            f"takes; retry later")
        if self.runs_by_client[client] >= self.max_runs_per_client:
            raise BusyError(f"this connection has {self.runs_by_client[client]} runs in flight, "
                            f"the most one connection may have; wait for some to finish")

    def admit(self, client: bytes) -> None:
        self.in_flight += 1
        self.runs_by_client[client] += 1

    def release(self, client: bytes) -> None:
        self.in_flight -= 1
        self.runs_by_client[client] -= 1
        if not self.runs_by_client[client]:
            del self.runs_by_client[client]
