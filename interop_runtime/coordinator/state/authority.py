"""Who may send what to the coordinator (protocol/SPEC.md section 13).

Under CURVE with an allow-list, the authenticated key of each message decides its role:
clients run graphs and ask questions, a worker key may register as its one worker name
and speak for it, and nobody else may do either. Without an allow-list (plain text, or
CURVE without one, both loopback only) every peer may take any role: the connection
still binds a worker's name, its replies and its completions.
"""

from __future__ import annotations

from interop_runtime.transport.allowlist import Role
from interop_runtime.wire.errors import UnauthorizedError


class Authority:
    def __init__(self, roles: dict[str, Role] | None = None) -> None:
        self.roles = roles

    @property
    def enforced(self) -> bool:
        return self.roles is not None

    def role(self, key: str | None) -> Role | None:
        return self.roles.get(key) if self.roles is not None and key else None

    def require_client(self, key: str | None, what: str) -> None:
        if self.roles is None:
            return
        role = self.role(key)
        if role is None or role.kind != "client":
            who = role.describe() if role else "an unlisted key"
            raise UnauthorizedError(f"{what} is for clients; this key is {who}")

    def require_worker(self, key: str | None, name: str) -> None:
        if self.roles is None:
            return
        role = self.role(key)
        if role is None or role.kind != "worker" or role.worker != name:
            who = role.describe() if role else "an unlisted key"
            raise UnauthorizedError(f"this key may not register as worker {name!r}: it is {who}",
                                    field="name", worker=name)

    def require_pool(self, key: str | None, name: str, pool: str | None) -> None:
        """Under CURVE a worker joins a replica pool only if its key's role names that pool:
        a pool's traffic is routed to every member, so membership is a grant, not a claim."""
        if self.roles is None or pool is None:
            return
        role = self.role(key)
        if role is None or role.pool != pool:
            raise UnauthorizedError(f"worker {name!r} may not join pool {pool!r}: its key "
                                    f"grants {('pool ' + repr(role.pool)) if role and role.pool else 'no pool'}",
                                    field="pool", worker=name)
