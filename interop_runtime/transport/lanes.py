"""Same-host lanes: a second, faster pipe beside a ZeroMQ connection (SPEC section 20).

A ZeroMQ message between two processes wakes four threads: the sender's I/O thread, the
receiver's I/O thread, then the receiver's own. A unix ``SOCK_SEQPACKET`` socket wakes
only the receiver: a 1 KiB round trip with the processes idle 1 ms in between (every hop
of a run) takes 100 µs here against 330 µs over tcp. So peers on one host move their
messages over a lane once they have one, and keep ZeroMQ for everything else.

A lane adds no authority of its own. It is offered over an authenticated ZeroMQ
connection (a ``CONTROL ping`` with ``args.lane``, answered with a path and a one-time
nonce), and the receiver treats every message on it as coming from that connection: the
same routing identity, the same CURVE key, the same checks. The path lies in a directory
only our user can enter, and the first packet must be the nonce, within a few seconds.

One packet is one message: ``u32 n``, ``n`` x ``u32`` frame lengths (little-endian), then
the frames back to back. At most ``LANE_MAX_BYTES``; larger messages take ZeroMQ.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("interop.transport")

LANE_MAX_BYTES = 128 << 10  # frames of one message (under the default socket buffer)
MAX_FRAMES = 64
HELLO = b"interop-lane/1 "  # + the nonce (32 hex digits): the first packet on a lane
ACK = b"interop-lane/1 ok"  # the receiver's answer once the lane is bound
HELLO_TIMEOUT_S = 5.0  # an accepted lane that has not said its nonce by then is closed
OFFER_TTL_S = 10.0  # a nonce not used by then is forgotten
MAX_OFFERS = 1024  # nonces waiting for their lane, oldest dropped first
MAX_UNBOUND = 64  # accepted lanes waiting for their hello, oldest closed first
MAX_LANES = 4096  # bound lanes one process keeps
_NONCE = re.compile(r"[0-9a-f]{32}")
_BUFSIZE = LANE_MAX_BYTES + 4 * (MAX_FRAMES + 1) + 1  # one more: a longer packet shows


def supported() -> bool:
    """Linux unix seqpacket sockets, unless ``INTEROP_NO_LANES`` is set (a diagnostic
    switch: everything then takes ZeroMQ, as between hosts)."""
    return (sys.platform.startswith("linux") and hasattr(socket, "SOCK_SEQPACKET")
            and not os.environ.get("INTEROP_NO_LANES"))


def lane_dir() -> str:
    """A directory for lane sockets that only this user may enter (created 0700, and
    refused if it is a link, someone else's, or open to others)."""
    path = os.path.join(tempfile.gettempdir(), f"interop-lanes-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


def pack(frames: Sequence[Any]) -> list[Any] | None:
    """The buffers of one packet for ``frames``, or None when they do not fit a lane."""
    views = [memoryview(f) for f in frames]
    lengths = [v.nbytes for v in views]
    if len(views) > MAX_FRAMES or sum(lengths) > LANE_MAX_BYTES:
        return None
    return [struct.pack(f"<{len(views) + 1}I", len(views), *lengths), *views]


def unpack(packet: bytes) -> list[memoryview]:
    """The frames of one packet; ValueError if the packet is not one."""
    view = memoryview(packet)
    if view.nbytes < 4:
        raise ValueError("lane packet shorter than its frame count")
    (count,) = struct.unpack_from("<I", view)
    if not 1 <= count <= MAX_FRAMES or view.nbytes < 4 * (count + 1):
        raise ValueError(f"lane packet names {count} frames")
    lengths = struct.unpack_from(f"<{count}I", view, 4)
    at = 4 * (count + 1)
    if sum(lengths) > LANE_MAX_BYTES:
        raise ValueError(f"lane packet holds more than {LANE_MAX_BYTES} bytes of frames")
    if at + sum(lengths) != view.nbytes:
        raise ValueError("lane packet's frame lengths do not add up to its size")
    frames = []
    for n in lengths:
        frames.append(view[at:at + n])
        at += n
    return frames


class Lane:
    """One connected lane. ``peer`` and ``key``: the ZeroMQ routing identity and CURVE key
    its messages count as coming from (receiving side, once bound); ``bound`` on the
    sending side once the receiver acknowledged the nonce."""

    def __init__(self, sock: socket.socket, *, outgoing: bool) -> None:
        sock.setblocking(False)
        self.sock, self.outgoing = sock, outgoing
        self.fd = sock.fileno()  # what a poller knows it by, also once it is closed
        self.on_close: Callable[[Lane], None] | None = None  # its owner stops polling it
        self.peer: bytes | None = None
        self.key: str | None = None
        self.bound = False
        self.closed = False
        self.owner: Any = None  # what the user of the lane hangs on it (its ZeroMQ socket)
        self.since = time.monotonic()

    def fileno(self) -> int:  # zmq.Poller polls it like a socket
        return self.sock.fileno()

    def send(self, frames: Sequence[Any]) -> bool:
        """Send one message; False (nothing sent) if it does not fit, the lane is not
        bound, or the receiver is not keeping up: then it takes ZeroMQ."""
        if not self.bound or self.closed:
            return False
        buffers = pack(frames)
        if buffers is None:
            return False
        try:
            self.sock.sendmsg(buffers)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):  # the peer is gone
                self.close()
            return False

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            self.close()

    def recv_packet(self) -> bytes | None:
        """The next packet, or None when there is none now (or the lane closed)."""
        if self.closed:
            return None
        buf = _buffer()
        try:  # MSG_TRUNC: the packet's whole length, so that a longer one shows
            n = self.sock.recv_into(buf, len(buf), socket.MSG_TRUNC)
        except BlockingIOError:
            return None
        except OSError:
            self.close()
            return None
        if n == 0 or n > len(buf):  # the other end closed, or sent more than a lane holds
            self.close()
            return None
        return bytes(buf[:n])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.bound = False
            if self.on_close is not None:
                self.on_close(self)
            self.sock.close()


_local = threading.local()


def _buffer() -> bytearray:
    """A receive buffer per thread: a packet is copied out of it at its own size."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(_BUFSIZE)
    return buf


def dial(path: str, nonce: str) -> Lane | None:
    """Connect to a lane offered at ``path`` and say its nonce; None if it cannot be
    reached (the offer then simply goes unused)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.settimeout(1.0)
        sock.connect(path)
        sock.send(HELLO + nonce.encode())
    except OSError as exc:
        log.info("lane at %s not reachable: %s", path, exc)
        sock.close()
        return None
    return Lane(sock, outgoing=True)


def lane_offer(body: Any) -> tuple[str, str] | None:
    """The (path, nonce) of a ping reply's lane offer, if it is one we may dial: a socket
    in our own private lane directory, never a path a peer chose elsewhere."""
    offer = body.get("lane") if isinstance(body, dict) else None
    if not isinstance(offer, dict):
        return None
    path, nonce = offer.get("path"), offer.get("nonce")
    if not isinstance(path, str) or not isinstance(nonce, str) or not _NONCE.fullmatch(nonce) \
            or "\x00" in path:
        return None
    try:
        if os.path.dirname(os.path.realpath(path)) != os.path.realpath(lane_dir()):
            return None
    except (OSError, ValueError):  # ValueError: what realpath raises for odd strings
        return None
    return path, nonce


def is_ack(packet: bytes) -> bool:
    return packet == ACK


def took_ack(lane: Lane, packet: bytes) -> bool:
    """On a lane we dialled, before it is bound: whether ``packet`` is the receiver's
    acknowledgement (the lane is bound from then on). False for any later packet."""
    if lane.bound:
        return False
    lane.bound = is_ack(packet)
    return True


def _sweep(directory: str, limit: int = 1024) -> None:
    """Unlink the sockets of processes that died without closing theirs (a kill -9): each
    is named ``<pid>-<token>.sock``."""
    with os.scandir(directory) as entries:
        for entry in list(entries)[:limit]:
            pid = entry.name.split("-", 1)[0]
            if not entry.name.endswith(".sock") or not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
            except OSError:  # alive (someone else's pid namespace or not ours to signal)
                pass


class LaneServer:
    """The receiving side: a listening socket, the nonces offered over ZeroMQ, and the
    lanes accepted. Every table is bounded; nothing a peer sends can grow one past it."""

    def __init__(self, directory: str | None = None) -> None:
        directory = directory or lane_dir()
        _sweep(directory)
        self.path = os.path.join(directory, f"{os.getpid()}-{secrets.token_hex(8)}.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(self.path)
        os.chmod(self.path, 0o600)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.offers: OrderedDict[str, tuple[bytes, str | None, float]] = OrderedDict()
        self.unbound: OrderedDict[Lane, None] = OrderedDict()
        self.by_peer: dict[bytes, Lane] = {}

    def fileno(self) -> int:
        return self.listener.fileno()

    def offer(self, peer: bytes, key: str | None, now: float | None = None) -> dict[str, str]:
        """A lane for the ZeroMQ connection ``peer`` (authenticated as ``key``): the path
        and the nonce to say on it."""
        now = time.monotonic() if now is None else now
        self._forget_offers(now)
        while len(self.offers) >= MAX_OFFERS:
            self.offers.popitem(last=False)
        nonce = secrets.token_hex(16)
        self.offers[nonce] = (peer, key, now + OFFER_TTL_S)
        return {"path": self.path, "nonce": nonce}

    def accept(self) -> Lane | None:
        """A new connection, if its process runs as our user (the directory already keeps
        others out; this says so on the socket itself)."""
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, OSError):
            return None
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            conn.close()
            return None
        while len(self.unbound) >= MAX_UNBOUND:
            oldest, _ = self.unbound.popitem(last=False)
            oldest.close()
        lane = Lane(conn, outgoing=False)
        self.unbound[lane] = None
        return lane

    def hello(self, lane: Lane, packet: bytes, now: float | None = None) -> bool:
        """The first packet of an accepted lane: bind it to the connection its nonce was
        offered to, and acknowledge. False (and the lane closed) for anything else."""
        now = time.monotonic() if now is None else now
        self.unbound.pop(lane, None)
        nonce = packet[len(HELLO):].decode("ascii", "replace") if packet.startswith(
            HELLO) else ""
        offered = self.offers.pop(nonce, None)
        if offered is None or now > offered[2] or len(self.by_peer) >= MAX_LANES:
            lane.close()
            return False
        lane.peer, lane.key = offered[0], offered[1]
        old = self.by_peer.get(lane.peer)
        if old is not None:
            old.close()
        self.by_peer[lane.peer] = lane
        lane.bound = True
        lane.send_raw(ACK)
        return True

    def dropped(self, lane: Lane) -> None:
        self.unbound.pop(lane, None)
        if lane.peer is not None and self.by_peer.get(lane.peer) is lane:
            del self.by_peer[lane.peer]

    def expire(self, now: float) -> list[Lane]:
        """Close accepted lanes that did not say their nonce in time; returns them."""
        self._forget_offers(now)
        late = [lane for lane in self.unbound if now - lane.since > HELLO_TIMEOUT_S]
        for lane in late:
            del self.unbound[lane]
            lane.close()
        return late

    def _forget_offers(self, now: float) -> None:
        while self.offers:
            nonce, (_, _, deadline) = next(iter(self.offers.items()))
            if deadline >= now:
                break
            del self.offers[nonce]

    def close(self) -> None:
        for lane in [*self.unbound, *self.by_peer.values()]:
            lane.close()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
