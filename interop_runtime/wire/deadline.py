"""The one timeout rule: every wait is bounded by a Deadline, none waits forever."""

from __future__ import annotations

import time

DEFAULT_REQUEST_TIMEOUT_S = 30.0


class Deadline:
    """A point in monotonic time; ``None`` seconds means the default, never infinity."""

    __slots__ = ("at",)

    def __init__(self, seconds: float | None = None) -> None:
        self.at = time.monotonic() + (DEFAULT_REQUEST_TIMEOUT_S if seconds is None else seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def remaining_ms(self) -> int:
        return int(self.remaining() * 1000)

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.at
