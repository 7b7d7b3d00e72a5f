"""The agent's unix socket behind one router's nginx: CloudStack's password
server and IMDSv2's tokens (``router.services.imds_tokens``), in the agent's
memory.

A guest asks with one request header (``DomU_Request``), as CloudStack's
``cloud-set-guest-password`` script and cloud-init's CloudStack datasource
do, on TCP 8080 of its router's guest address:

* ``send_my_password``: the password set for its port, or ``saved_password``
  when there is none (never set, or already acknowledged);
* ``saved_password``: the guest has set it; it is dropped, the answer is
  ``saved_password``;
* anything else: ``bad_request``.

nginx (the router's metadata server) accepts the connection, which nftables
let through only from the port's own (interface, MAC, IP), and proxies it to
this server's unix socket with the checked source address in
``X-Cloudnet-Guest`` (set by nginx, replacing whatever a client sent). The
passwords live only here, in this process's memory: never in a file, so an
agent restart forgets those not yet fetched (the caller resets again).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler

from router.lib.accept_loop import AcceptLoop
from router.services import imds_tokens
from router.services.imds_tokens import GuestTokens

log = logging.getLogger(__name__)

GUEST_HEADER = "X-Cloudnet-Guest"
REQUEST_HEADER = "DomU_Request"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
# The agent's paths (nginx maps guests' requests onto them; a guest cannot
# name them: port 8080 is proxied under PASSWORD_PREFIX).
PASSWORD_PREFIX = "/password/"
TOKEN_NEW = "/token/new"
TOKEN_CHECK = "/token/check"
SAVED = "saved_password"
FALLBACK_DIR = "/run/cloudnet-passwords"
BAD = "bad_request"
# Every router's server in this agent is accepted on by one thread.
ACCEPT_LOOP = AcceptLoop("password servers")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    passwords: GuestPasswords
    tokens: GuestTokens

    def handle_error(self, request: object, client_address: object) -> None:
        # A connection nginx dropped halfway (its guest gone): a line in the
        # agent's log, not a traceback on its stderr.
        log.info("password server %s: %r", self.server_address, sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    timeout = 30  # nginx proxies at once; a stalled connection ends, its thread with it

    def _guest(self) -> str | None:
        guest = self.headers.get(GUEST_HEADER, "")
        try:
            ipaddress.IPv4Address(guest)
        except ValueError:
            return None
        return guest

    def do_GET(self) -> None:
        guest = self._guest()
        if self.path == TOKEN_CHECK:
            token = self.headers.get(TOKEN_HEADER, "")
            ok = guest is not None and self.server.tokens.valid(guest, token)
            self._answer(204 if ok else 401, "")
        elif self.path.startswith(PASSWORD_PREFIX):
            request = self.headers.get(REQUEST_HEADER, "").strip()
            self._answer(200, BAD if guest is None else
                         self.server.passwords.answer(guest, request))
        else:
            self._answer(404, "")

    def do_PUT(self) -> None:
        guest = self._guest()
        ttl = imds_tokens.parse_ttl(self.headers.get(TTL_HEADER, ""))
        if self.path != TOKEN_NEW or guest is None:
            self._answer(404, "")
        elif ttl is None:
            self._answer(400, "")
        else:
            self._answer(200, self.server.tokens.mint(guest, ttl), ((TTL_HEADER, str(ttl)),))

    def _answer(self, code: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # an access log would carry nothing useful, and nothing secret either


class GuestPasswords:
    """port ID -> the password its guest has not acknowledged yet, and the
    unix socket nginx proxies guests' requests to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._passwords: dict[str, str] = {}
        self._port_of_ip: dict[str, str] = {}
        self.tokens = GuestTokens()
        self._server: _Server | None = None
        self._socket = ""

    # ------------------------------------------------------------ guests

    def guests(self, port_of_ip: dict[str, str]) -> None:
        """The router's ports now (guest IP -> port ID): passwords of ports
        gone are dropped."""
        self.tokens.guests(port_of_ip)
        with self._lock:
            self._port_of_ip = dict(port_of_ip)
            ports = set(port_of_ip.values())
            for port_id in [p for p in self._passwords if p not in ports]:
                del self._passwords[port_id]

    def has_port(self, port_id: str) -> bool:
        with self._lock:
            return port_id in self._port_of_ip.values()

    def set(self, port_id: str, password: str) -> None:
        with self._lock:
            self._passwords[port_id] = password

    def answer(self, guest_ip: str, request: str) -> str:
        with self._lock:
            port_id = self._port_of_ip.get(guest_ip)
            if request == "send_my_password":
                return (self._passwords.get(port_id) if port_id else None) or SAVED
            if request == "saved_password":
                if port_id:
                    self._passwords.pop(port_id, None)
                return SAVED
            return BAD

    def clear(self) -> None:
        self.tokens.clear()
        with self._lock:
            self._passwords.clear()
            self._port_of_ip.clear()

    # ------------------------------------------------------------ server

    def running(self, path: str) -> bool:
        return self._server is not None and self._socket == path

    def serve(self, path: str, gid: int) -> None:
        """Listen on ``path`` (owner root, group ``gid``: nginx's workers), once."""
        if self.running(path):
            return
        self.stop()
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = _Server(path, _Handler, bind_and_activate=False)
        try:
            # Only root and nginx's group may ask: the socket's mode is set
            # before it listens (the umask covers the bind).
            old = os.umask(0o117)
            try:
                server.server_bind()
            finally:
                os.umask(old)
            os.chown(path, 0, gid)
            server.server_activate()
        except BaseException:
            server.server_close()
            raise
        server.passwords = self
        server.tokens = self.tokens
        self._server, self._socket = server, path
        ACCEPT_LOOP.add(server)

    def stop(self) -> None:
        server, path = self._server, self._socket
        self._server, self._socket = None, ""
        if server is None:
            return
        ACCEPT_LOOP.remove(server)
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def socket_path(preferred: str, router_id: str) -> str:
    """``preferred`` when it fits a unix socket address (107 bytes), else a
    short path under /run named by the router."""
    if len(preferred.encode()) < 100:
        return preferred
    return os.path.join(FALLBACK_DIR, f"{router_id[:40]}.sock")

