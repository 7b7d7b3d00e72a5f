"""keepalived's notify and check script: a tiny client of the router agent.

keepalived runs it (no shell: it splits its own quoted command line) as

    python3 -I -S vrrp_notify.py SOCKET ROUTER_ID INSTANCE NAME STATE PRIORITY
    python3 -I -S vrrp_notify.py --check SOCKET ROUTER_ID

The first form tells the agent listening on the unix socket SOCKET that
router ROUTER_ID's instance changed state (keepalived appends INSTANCE NAME
STATE PRIORITY to the configured line); the agent then commits the synced
connection state and starts or stops what runs on the master only. The
second is keepalived's health check of the agent (``vrrp_script``, a weight
only): exit 0 when the agent answers for the router.

Whether the agent is alive at all is not asked here: keepalived's
``agent_alive`` script is ``flock`` on the lock the agent's listener holds
(``router.agent.vrrp_listener``), which costs nothing to start. Python on a
loaded host takes a second or two to start, and a script that times out
counts as failed at once. ``--alive SOCKET`` (whether a process listens on
the socket) is still understood for a keepalived.conf rendered by an older
agent, until the next apply rewrites it.

Run with ``-I -S`` and importing only ``_socket`` (not ``socket``, whose
enum and selectors imports cost most of the start-up, nor ``json``): nothing
of the environment or of site-packages is read, it starts in a few tens of
milliseconds, and nothing a user typed reaches it (the router ID is checked
by the agent before it is rendered into the line, and again by the agent
when it arrives). The agent's answer is one JSON line that starts with
``{"ok": true`` when it agrees (``vrrp_listener.answer``).
"""

from __future__ import annotations

import _socket
import sys
import time

started = time.time()

TIMEOUT = 5.0
OK = b'{"ok": true'


def _string(value: str) -> str:
    """A JSON string (what the agent parses); control characters refused."""
    if any(ord(c) < 0x20 for c in value):
        raise ValueError("control character in an argument")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ask(path: str, message: str) -> bool:
    """Send one JSON line; whether the one line back says ok."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(TIMEOUT)
        s.connect(path)
        s.sendall(message.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    finally:
        s.close()
    return reply.startswith(OK)


def listening(path: str) -> bool:
    """Whether a process accepts on the unix socket ``path`` (a slow one does:
    the kernel queues the connection)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(TIMEOUT)
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except OSError:  # a full backlog, a timeout: there, but busy
        return True
    finally:
        s.close()
    return True


def main(argv: list[str]) -> int:
    if argv[:1] == ["--alive"] and len(argv) == 2:
        return 0 if listening(argv[1]) else 1
    try:
        if argv[:1] == ["--check"] and len(argv) == 3:
            return 0 if ask(argv[1], f'{{"router": {_string(argv[2])}, "check": true}}') else 1
        if len(argv) >= 5:
            # SOCKET ROUTER INSTANCE|GROUP NAME STATE [PRIORITY]
            # When keepalived ran us (its state change, give or take our
            # start): the agent logs how long the notification took.
            message = (f'{{"router": {_string(argv[1])}, "state": {_string(argv[4])}, '
                       f'"at": {started!r}}}')
            return 0 if ask(argv[0], message) else 1
    except (OSError, ValueError):
        return 1
    print("usage: vrrp_notify.py SOCKET ROUTER TYPE NAME STATE [PRIORITY] | "
          "--check SOCKET ROUTER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
