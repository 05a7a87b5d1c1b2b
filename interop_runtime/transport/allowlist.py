"""Who may be who: the cluster's allow-list binds each CURVE public key to one role.

The allow-list is a directory of public key files (``NAME.key``, ZeroMQ certificates).
Each file may carry its role in the certificate's ``metadata`` section::

    metadata
        role = "worker"
        worker = "w1"
    curve
        public-key = "..."

``role`` is ``coordinator``, ``worker`` (then ``worker`` names the one worker this key may
register as, and an optional ``pool`` the one replica pool it may join) or ``client``.
A file without a role gets one from its name: ``coordinator``
is the coordinator, ``client`` or ``client-*`` a client, anything else the worker of that
name (what ``interop keys generate`` wrote before roles existed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zmq.auth

RoleKind = Literal["coordinator", "worker", "client"]
ROLE_KINDS: tuple[RoleKind, ...] = ("coordinator", "worker", "client")

_META = re.compile(r'^\s+(role|worker|pool)\s*=\s*"([^"]*)"\s*$')


@dataclass(frozen=True)
class Role:
    kind: RoleKind
    worker: str | None = None  # for kind "worker": the only name this key may register as
    pool: str | None = None  # for kind "worker": the only replica pool it may join

    def describe(self) -> str:
        if self.kind != "worker":
            return self.kind
        return f"worker {self.worker!r}" + (f" in pool {self.pool!r}" if self.pool else "")


def inferred_role(name: str) -> Role:
    if name == "coordinator":
        return Role("coordinator")
    if name == "client" or name.startswith(("client-", "client_")):
        return Role("client")
    return Role("worker", name)


def read_role(path: str | Path) -> Role:
    """The role a public key file states, or the one its file name implies."""
    path = Path(path)
    found: dict[str, str] = {}
    section = ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line and not line[0].isspace():
            section = line.strip()
            continue
        m = _META.match(line)
        if section == "metadata" and m:
            found[m.group(1)] = m.group(2)
    kind = found.get("role")
    if kind is None:
        return inferred_role(path.name.split(".", 1)[0])
    if kind not in ROLE_KINDS:
        raise ValueError(f"{path}: role {kind!r} is not one of {', '.join(ROLE_KINDS)}")
    if kind == "worker":
        return Role("worker", found.get("worker") or path.name.split(".", 1)[0],
                    found.get("pool") or None)
    return Role(kind)


def write_role(path: str | Path, role: Role) -> None:
    """Put ``role`` into the metadata section of a certificate file written by pyzmq."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    meta = [f'    role = "{role.kind}"'] + ([f'    worker = "{role.worker}"'] if role.worker else [])
    meta += [f'    pool = "{role.pool}"'] if role.pool else []
    out: list[str] = []
    for line in lines:
        out.append(line)
        if line.strip() == "metadata":
            out += meta
    if "metadata" not in (line.strip() for line in lines):
        out = ["metadata", *meta, *out]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def load_allow_list(directory: str | Path) -> dict[str, Role]:
    """Z85 public key -> role, for every ``*.key`` file in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"the allow-list {directory} is not a directory")
    roles: dict[str, Role] = {}
    for path in sorted(directory.glob("*.key")):
        public, _ = zmq.auth.load_certificate(str(path))
        key = public.decode("ascii")
        role = read_role(path)
        if key in roles and roles[key] != role:
            raise ValueError(f"{path}: key is already listed as {roles[key].describe()}")
        roles[key] = role
    return roles
