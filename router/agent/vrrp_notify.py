"""keepalived's notify and check script: a tiny client of the router agent.

keepalived runs it (no shell: it splits its own quoted command line) as

    python3 -I -S vrrp_notify.py SOCKET ROUTER_ID INSTANCE NAME STATE PRIORITY
    python3 -I -S vrrp_notify.py --check SOCKET ROUTER_ID
    python3 -I -S vrrp_notify.py --alive SOCKET

The first form tells the agent listening on the unix socket SOCKET that
router ROUTER_ID's instance changed state (keepalived appends INSTANCE NAME
STATE PRIORITY to the configured line); the agent then commits the synced
connection state and starts or stops what runs on the master only. The
second is keepalived's health check of the agent (``vrrp_script``): exit 0
when the agent answers for the router. The third fails only when no process
listens on the socket any more (the agent is gone: killed, or its host's
agent is down), not when it is slow: keepalived then holds the instance in
FAULT, so an instance whose agent died (its namespace and daemons orphaned,
out of netmgr's reach) gives up every address rather than serve on alone
once netmgr places the instance elsewhere. Standard library only, and run with
``-I -S``: nothing of the environment or of site-packages is read, so it
starts in tens of milliseconds and nothing a user typed reaches it (the
router ID is checked by the agent before it is rendered into the line).
"""

from __future__ import annotations

import json
import socket
import sys
import time

started = time.time()

TIMEOUT = 5.0


def ask(path: str, message: dict[str, object]) -> dict[str, object]:
    """Send one JSON line, read one JSON line back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(path)
        s.sendall(json.dumps(message).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    answer = json.loads(reply or b"{}")
    return answer if isinstance(answer, dict) else {}


def listening(path: str) -> bool:
    """Whether a process accepts on the unix socket ``path`` (a slow one does:
    the kernel queues the connection)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:  # a full backlog, a timeout: there, but busy
            return True
    return True


def main(argv: list[str]) -> int:
    if argv[:1] == ["--alive"] and len(argv) == 2:
        return 0 if listening(argv[1]) else 1
    try:
        if argv[:1] == ["--check"] and len(argv) == 3:
            return 0 if ask(argv[1], {"router": argv[2], "check": True}).get("ok") else 1
        if len(argv) >= 5:
            # SOCKET ROUTER INSTANCE|GROUP NAME STATE [PRIORITY]
            # When keepalived ran us (its state change, give or take our
            # start): the agent logs how long the notification took.
            answer = ask(argv[0], {"router": argv[1], "state": argv[4], "at": started})
            return 0 if answer.get("ok") else 1
    except (OSError, ValueError):
        return 1
    print("usage: vrrp_notify.py SOCKET ROUTER TYPE NAME STATE [PRIORITY] | "
          "--check SOCKET ROUTER | --alive SOCKET", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
