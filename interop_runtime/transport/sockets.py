"""ZeroMQ sockets for the runtime: one ROUTER inbox per process, DEALERs out.

The same code serves tcp://, ipc:// and inproc://. Frames go out with
``copy=False`` (large buffers are not copied into ZeroMQ) and come in as
``zmq.Frame`` objects whose buffers numpy wraps without copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

from interop_runtime.transport.security import Security, secure_client, secure_server
from interop_runtime.wire.codec import Envelope, Frame, decode, encode
from interop_runtime.wire.messages import Header

# plain ints: pyzmq's enum flags cost a Python-level __and__ on every test of them
EVENTS, POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message is waiting now (no poll, no exception)."""
    return bool(int(sock.getsockopt(EVENTS)) & POLLIN)


# pyzmq copies frames under this size anyway; above it, zero-copy pays off.
COPY_THRESHOLD = 64 * 1024


def normalize_bind(address: str) -> str:
    """Accept ``tcp://host:0`` as 'any free port'."""
    if address.startswith("tcp://") and address.endswith(":0"):
        return address[:-2] + ":*"
    return address


def configure(sock: zmq.Socket[bytes], *, max_message_bytes: int | None = None, hwm: int = 10_000) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if max_message_bytes:
        # A hard guard per frame; the typed TOO_LARGE reply comes from the decoder's
        # own (lower) limit, this only stops a peer from exhausting memory.
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes + (1 << 20))


def bind_router(ctx: zmq.Context[zmq.Socket[bytes]], address: str, *, max_message_bytes: int | None = None,
                mandatory: bool = False, security: Security | None = None, hwm: int = 10_000
                ) -> tuple[zmq.Socket[bytes], str]:
    sock = ctx.socket(zmq.ROUTER)
    configure(sock, max_message_bytes=max_message_bytes, hwm=hwm)
    secure_server(ctx, sock, security)
    if mandatory:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind(normalize_bind(address))
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return sock, endpoint


def connect_dealer(ctx: zmq.Context[zmq.Socket[bytes]], address: str, *, identity: bytes | None = None,
                   max_message_bytes: int | None = None, security: Security | None = None,
                   server_key: bytes | str | None = None) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    configure(sock, max_message_bytes=max_message_bytes)
    secure_client(sock, security, server_key if server_key is not None else
                  (security.server_key if security else None))
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(address)
    return sock


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[Frame], *, peer: bytes | None = None,
                flags: int = 0) -> None:
    parts = [peer, *frames] if peer is not None else list(frames)
    sock.send_multipart(parts, copy=False, flags=flags)


def send_msg(sock: zmq.Socket[bytes], msg: Header, arrays: Any = None, *, peer: bytes | None = None,
             flags: int = 0, layouts: Any = None, shared: Any = None) -> None:
    """``shared``: tensors already in shared memory, name -> (dtype, shape, handle)."""
    send_frames(sock, encode(msg, arrays, layouts=layouts, shared=shared), peer=peer,
                flags=flags)


def sender_key(frames: Sequence[Any]) -> str | None:
    """The CURVE public key (Z85) that ZeroMQ authenticated for this message, or None on a
    plain-text socket. It comes from the handshake, so a peer cannot choose it."""
    if not frames or not isinstance(frames[0], zmq.Frame):
        return None
    try:
        key = frames[0].get("User-Id")
    except zmq.ZMQError:  # no security mechanism on this connection
        return None
    return key if isinstance(key, str) and key else None


def recv_frames(sock: zmq.Socket[bytes], *, router: bool) -> tuple[bytes | None, list[zmq.Frame]]:
    parts = sock.recv_multipart(copy=False)
    if router:
        return parts[0].bytes, parts[1:]
    return None, parts


def recv_envelope(sock: zmq.Socket[bytes], *, router: bool, max_bytes: int) -> tuple[bytes | None, Envelope]:
    peer, frames = recv_frames(sock, router=router)
    return peer, decode(frames, max_bytes=max_bytes)
