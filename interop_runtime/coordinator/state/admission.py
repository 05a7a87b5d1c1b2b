"""Admission: how many runs, and how many input bytes, may be in flight, in all and per
client, so that one client cannot hog the coordinator or its memory."""

from __future__ import annotations

from collections import defaultdict

from interop_runtime.wire.errors import BusyError

GIB = 1 << 30


class Admission:
    def __init__(self, max_runs_in_flight: int = 10_000, max_runs_per_client: int = 1_000, *,
                 max_bytes_in_flight: int = 8 * GIB, max_bytes_per_client: int = 2 * GIB) -> None:
        self.max_runs_in_flight = max_runs_in_flight
        self.max_runs_per_client = max_runs_per_client  # per connection: one client can't hog
        self.max_bytes_in_flight = max_bytes_in_flight
        self.max_bytes_per_client = max_bytes_per_client
        self.runs_by_client: dict[bytes, int] = defaultdict(int)
        self.bytes_by_client: dict[bytes, int] = defaultdict(int)
        self.in_flight = 0
        self.bytes_in_flight = 0

    def check(self, client: bytes, nbytes: int = 0) -> None:
        """Raise ``BusyError`` unless one more run from ``client`` with ``nbytes`` of inputs
        fits."""
        if self.in_flight >= self.max_runs_in_flight:
            raise BusyError(f"{self.in_flight} runs are in flight, the most this coordinator "
                            f"takes; retry later")
        if self.runs_by_client.get(client, 0) >= self.max_runs_per_client:
            raise BusyError(f"this connection has {self.runs_by_client[client]} runs in flight, "
                            f"the most one connection may have; wait for some to finish")
        if self.bytes_in_flight + nbytes > self.max_bytes_in_flight:
            raise BusyError(f"runs in flight hold {self.bytes_in_flight} bytes of inputs; "
                            f"{nbytes} more would pass the limit of {self.max_bytes_in_flight}")
        if self.bytes_by_client.get(client, 0) + nbytes > self.max_bytes_per_client:
            raise BusyError(f"this connection's runs hold {self.bytes_by_client[client]} bytes "
                            f"of inputs; {nbytes} more would pass its limit of "
                            f"{self.max_bytes_per_client}")

    def admit(self, client: bytes, nbytes: int = 0) -> None:
        self.in_flight += 1
        self.runs_by_client[client] += 1
        self.bytes_in_flight += nbytes
        self.bytes_by_client[client] += nbytes

    def release(self, client: bytes, nbytes: int = 0) -> None:
        self.in_flight -= 1
        self.runs_by_client[client] -= 1
        self.bytes_in_flight -= nbytes
        self.bytes_by_client[client] -= nbytes
        if not self.runs_by_client[client]:
            del self.runs_by_client[client]
            self.bytes_by_client.pop(client, None)
