"""Device names a worker accepts: ``cpu``, ``cuda`` (= ``cuda:0``) and ``cuda:N``.

The core only parses; whether the device exists is the plugin's framework's
question, and a plugin must fail at start (never fall back to the CPU) when
the device is not there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


class DeviceUnavailable(RuntimeError):
    """The requested device does not exist on this machine."""


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "cuda"
    index: int  # 0 for cpu

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def parse_device(device: str) -> Device:
    m = _DEVICE_RE.match(device.strip().lower())
    if not m or (m.group(1) == "cpu" and m.group(2) not in (None, "0")):
        raise ValueError(f"device {device!r} is not one of: cpu, cuda, cuda:N")
    return Device(m.group(1), int(m.group(2) or 0))
