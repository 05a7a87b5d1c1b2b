"""CURVE authentication and encryption for every socket (ZeroMQ's ``zmq.auth``, whose
allow-list check transport/zap.py serves).

Each process has its own key pair. A process that binds (the coordinator, each
worker's inbox) is a CURVE server and lets in only the client keys found in an
allow-list directory (``*.key`` public certificates). A process that connects pins
the server's public key: the coordinator's from a file, a peer worker's from the
coordinator's registry, which every worker announced when it registered.

The allow-list also says who may be who (transport/allowlist.py): every key there has
one role, and the daemons check each message's authenticated key against it.

Plain text is allowed only on loopback and ipc/inproc, and only when asked for
(``--insecure``): it trusts every local process. CURVE fails closed: a key without an
allow-list is refused off loopback.
"""

from __future__ import annotations

import ipaddress
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from interop_runtime.transport.allowlist import Role, inferred_role, load_allow_list, write_role
from interop_runtime.transport.zap import ZapHandler

ZAP_DOMAIN = "interop"


@dataclass(frozen=True)
class Security:
    """One process's CURVE identity and trust."""

    public_key: bytes  # Z85, 40 bytes
    secret_key: bytes
    authorized_dir: str | None = None  # public keys allowed to connect to our binds; None: any
    server_key: bytes | None = None  # the coordinator's public key, for connecting to it
    roles: dict[str, Role] | None = None  # Z85 key -> role, from the allow-list; None: none

    @classmethod
    def from_files(cls, key_file: str | Path, authorized_dir: str | Path | None = None,
                   coordinator_key: str | Path | None = None) -> Security:
        public, secret = zmq.auth.load_certificate(str(key_file))
        if secret is None:
            raise ValueError(f"{key_file} holds no secret key (use the .key_secret file)")
        server = zmq.auth.load_certificate(str(coordinator_key))[0] if coordinator_key else None
        roles = load_allow_list(authorized_dir) if authorized_dir else None
        return cls(public, secret, str(authorized_dir) if authorized_dir else None, server, roles)

    def role_of(self, key: str | None) -> Role | None:
        """The allow-listed role of an authenticated key (None: not listed, or no key)."""
        if key is None or self.roles is None:
            return None
        return self.roles.get(key)

    @property
    def public_text(self) -> str:
        return self.public_key.decode("ascii")


def generate_keys(directory: str | Path, name: str, *, authorize: bool = True,
                  role: Role | None = None) -> tuple[Path, Path]:
    """Write NAME.key (public, with its role) and NAME.key_secret (mode 0600); copy the
    public key into DIRECTORY/authorized/ when ``authorize`` (the cluster's allow-list).
    ``role`` defaults to what the name implies (allowlist.inferred_role)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    public, secret = zmq.auth.create_certificates(str(d), name)
    Path(secret).chmod(0o600)
    write_role(public, role or inferred_role(name))
    write_role(secret, role or inferred_role(name))
    if authorize:
        (d / "authorized").mkdir(exist_ok=True)
        shutil.copy(public, d / "authorized" / Path(public).name)
    return Path(public), Path(secret)


def is_loopback(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback host."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or a hostname: treat as reachable from outside


def is_wildcard(endpoint: str) -> bool:
    """A tcp endpoint on every interface (0.0.0.0, ::, *): fine to bind, useless to announce."""
    scheme, _, rest = endpoint.partition("://")
    host = rest.rsplit(":", 1)[0].strip("[]")
    return scheme == "tcp" and host in ("0.0.0.0", "*", "::", "")


def check_bind_allowed(address: str, security: Security | None, insecure: bool) -> None:
    """Fail closed: plain text only on loopback and only when asked for; CURVE off loopback
    only with an allow-list."""
    if security is None:
        if not is_loopback(address):
            raise ValueError(f"refusing to bind {address} without CURVE keys: plain text is for "
                             f"loopback only; pass --key and --authorized (see `interop keys "
                             f"generate`)")
        if not insecure:
            raise ValueError(f"refusing to bind {address} without CURVE keys: pass --key and "
                             f"--authorized, or --insecure to trust every local process")
    elif security.authorized_dir is None and not is_loopback(address):
        raise ValueError(f"refusing to bind {address} with a key but no allow-list: pass "
                         f"--authorized DIR, or any key could connect")


_auth_lock = threading.Lock()
_authenticators: dict[int, ZapHandler] = {}


def _ensure_authenticator(ctx: zmq.Context[zmq.Socket[bytes]], security: Security) -> None:
    """One ZAP handler per context, applying the allow-list to every CURVE server socket."""
    with _auth_lock:
        if id(ctx) in _authenticators:
            return
        auth = ZapHandler(ctx, ZAP_DOMAIN, security.authorized_dir or zmq.auth.CURVE_ALLOW_ANY)
        auth.start()
        _authenticators[id(ctx)] = auth


def secure_server(ctx: zmq.Context[zmq.Socket[bytes]], sock: zmq.Socket[bytes], security: Security | None) -> None:
    if security is None:
        return
    _ensure_authenticator(ctx, security)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.curve_secretkey = security.secret_key
    sock.curve_publickey = security.public_key
    sock.curve_server = True


def secure_client(sock: zmq.Socket[bytes], security: Security | None, server_key: bytes | str | None
                  ) -> None:
    if security is None:
        return
    if not server_key:
        raise ValueError("a CURVE connection needs the server's public key")
    sock.curve_secretkey = security.secret_key
    sock.curve_publickey = security.public_key
    sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key


def stop_authenticators() -> None:
    with _auth_lock:
        for auth in _authenticators.values():
            auth.stop()
        _authenticators.clear()
