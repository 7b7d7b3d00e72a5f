"""The all-in-one internet host's web server: answers every GET with the
client's source address (so a guest sees its source NAT).

    python -m aio.whoami --port 8080
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import socket
import sys

from aio.topology import WEB_PORT


def client_text(address: str) -> str:
    """The client's address as it sent from: an IPv4 client of the
    dual-stack socket shows as itself, not IPv4-mapped."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


class _DualStackServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _WhoAmI(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{client_text(self.client_address[0])}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"web: {self.client_address[0]} {fmt % args}\n")


def serve_whoami(port: int) -> None:
    """Answer every GET with the client's source address (to show SNAT, or an
    IPv6 guest's own address), over IPv4 and IPv6."""
    _DualStackServer(("::", port), _WhoAmI).serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m aio.whoami", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=WEB_PORT)
    serve_whoami(p.parse_args(argv).port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
