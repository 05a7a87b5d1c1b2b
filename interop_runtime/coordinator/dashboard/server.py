"""The dashboard's HTTP server, in a thread of its own. It serves the page, its static
files and the last snapshot the coordinator's loop published, as bytes: it never reads
the coordinator's state. GET and HEAD only; every other path is 404."""

from __future__ import annotations

import hmac
import http.server
import ipaddress
import logging
import secrets
import socket
import threading
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("interop.coordinator")

COOKIE = "interop_dashboard"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".html": "text/html; charset=utf-8"}
# the page runs only its own script and style: a name a peer chose can never run as code
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
WAIT_FOR_FRESH_S = 2.0  # a request waits this long at most for a snapshot newer than itself
REQUEST_TIMEOUT_S = 10.0  # a connection that sends nothing is closed after this
MAX_CONNECTIONS = 32  # served at once; more are closed at once


def is_loopback_host(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return False


def check_dashboard_allowed(addr: str, secure: bool) -> bool:
    """Whether the dashboard needs a token; raises ValueError where it may not be served.
    Off loopback: only when the coordinator runs CURVE, and then with a token. With CURVE
    a token is asked on loopback too (other local users hold no key, so no view either)."""
    if not is_loopback_host(addr) and not secure:
        raise ValueError(f"refusing to serve the dashboard on {addr} without CURVE keys: off "
                         f"loopback it needs a secure coordinator (--key and --authorized); "
                         f"or use --dashboard-addr 127.0.0.1")
    return secure


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    board: DashboardServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        # one thread per connection, and a bounded number of them
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class DashboardServer:
    def __init__(self, port: int, addr: str = "127.0.0.1", *, token_required: bool) -> None:
        self.addr = addr
        self.token = secrets.token_urlsafe(24) if token_required else None
        self.static = {f.name: f.read_bytes()
                       for f in resources.files(__package__).joinpath("static").iterdir()
                       if f.name.rsplit(".", 1)[-1] in ("js", "css", "html")}
        self._lock = threading.Condition()
        self._snapshot = b"{}"
        self._published = 0.0  # monotonic time of the last publish
        self.wanted = 0.0  # monotonic time of the last API request; read by the main loop
        server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) \
            if ":" in addr else _Server
        try:
            self.httpd = server_cls((addr.strip("[]"), port), _Handler)
        except OSError as exc:
            raise ValueError(f"cannot serve the dashboard on {addr}:{port}: "
                             f"{exc.strerror or exc}") from None
        self.httpd.board = self
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="interop-dashboard",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def publish(self, body: bytes) -> None:
        with self._lock:
            self._snapshot, self._published = body, time.monotonic()
            self._lock.notify_all()

    def snapshot(self) -> bytes:
        """The last snapshot, after waiting briefly for one newer than this request: the
        loop builds snapshots only while someone is looking."""
        asked = time.monotonic()
        self.wanted = asked
        with self._lock:
            self._lock.wait_for(lambda: self._published >= asked, timeout=WAIT_FOR_FRESH_S)
            return self._snapshot

    def authorized(self, query_token: str | None, cookie: str | None) -> bool:
        if self.token is None:
            return True
        return any(t is not None and hmac.compare_digest(t.encode(), self.token.encode())
                   for t in (query_token, cookie))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "interop-dashboard"
    sys_version = ""

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        board = self.server.board
        if not self._host_ok(board):
            return self._send(421, b"unknown host\n", "text/plain; charset=utf-8", head=head)
        url = urlsplit(self.path)
        tokens = parse_qs(url.query).get("token")
        token = tokens[0] if tokens else None
        if url.path in ("/", "/index.html"):
            extra = {}
            if board.token and token and board.authorized(token, None):
                # later requests (a reload without ?token) carry it as a cookie
                extra["Set-Cookie"] = f"{COOKIE}={board.token}; HttpOnly; SameSite=Strict; Path=/"
            return self._send(200, board.static["index.html"], STATIC_TYPES[".html"], head=head,
                              extra=extra)
        if url.path.startswith("/static/"):
            name = url.path.removeprefix("/static/")
            body = board.static.get(name) if name != "index.html" else None
            if body is not None:
                kind = STATIC_TYPES["." + name.rsplit(".", 1)[-1]]
                return self._send(200, body, kind, head=head)
        elif url.path == "/api/snapshot":
            if not board.authorized(token, self._cookie()):
                return self._send(403, b'{"error": "unauthorized: open the URL with the ?token= '
                                       b'the coordinator printed"}\n', "application/json",
                                  head=head)
            return self._send(200, board.snapshot(), "application/json", head=head)
        self._send(404, b"not found\n", "text/plain; charset=utf-8", head=head)

    def _host_ok(self, board: DashboardServer) -> bool:
        """On loopback, only loopback Host names: a web page whose name was rebound to
        127.0.0.1 must not read the snapshot (DNS rebinding)."""
        if not is_loopback_host(board.addr):
            return True
        host = self.headers.get("Host") or ""
        name = host[1:].partition("]")[0] if host.startswith("[") else (
            host.rpartition(":")[0] or host)
        return is_loopback_host(name)

    def _cookie(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value
        return None

    def _send(self, code: int, body: bytes, kind: str, *, head: bool,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in {**SECURITY_HEADERS, **(extra or {}), "Content-Type": kind,
                     "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard: " + format, *args)
