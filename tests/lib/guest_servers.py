"""Servers in namespace guests and the clients that ask them: socat answering a
line over TCP or UDP, HTTP servers naming themselves (load balancer members).
Every process is killed by its own PID (the ``servers`` fixture, ``Web.close``).
"""

from __future__ import annotations

import subprocess
import sys
import time

TCP, UDP = "tcp", "udp"


def in_ns(ns: str, argv: list[str], timeout: float = 15, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, **kw)


def serve(servers, guest, proto: str, port: int, answer: str) -> None:
    """A socat server in the guest answering `answer` on every connection/datagram."""
    listen = (f"TCP-LISTEN:{port},fork,reuseaddr" if proto == TCP
              else f"UDP-RECVFROM:{port},fork,reuseaddr")
    # Read the client's line before answering: closing with unread data
    # would reset the connection before the client reads the answer.
    servers.append(guest.popen(["socat", listen, f"SYSTEM:read line; echo {answer}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 5
    flag = "-tln" if proto == TCP else "-uln"
    while f":{port} " not in guest.run(["ss", "-H", flag]).stdout:
        assert time.monotonic() < deadline, f"{proto} server on {port} did not start"
        time.sleep(0.05)


def ask(ns: str, proto: str, ip: str, port: int, timeout: float = 5) -> str:
    """What a socat client gets from ip:port ("" when nothing answers)."""
    target = f"TCP:{ip}:{port},connect-timeout={timeout}" if proto == TCP else f"UDP:{ip}:{port}"
    r = in_ns(ns, ["socat", f"-T{timeout}", "-", target], input="x\n", timeout=timeout + 10)
    return r.stdout.strip()


# Answers every GET with its name (and /health with 200).
HTTP_SERVER = (
    "import http.server, sys\n"
    "name = sys.argv[1]\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.0'\n"
    "    def do_GET(self):\n"
    "        body = name.encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
)


class Web:
    """HTTP servers in guests, started and killed by their own PIDs."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, guest, name: str) -> None:
        if name in self.procs:
            # A module's servers made again for its other backend: the
            # earlier one is stopped, never left running unrecorded.
            self.stop(name)
        self.procs[name] = guest.popen([sys.executable, "-c", HTTP_SERVER, name],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while ":8080 " not in guest.run(["ss", "-Htln"]).stdout:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        p.kill()
        p.wait(timeout=5)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
