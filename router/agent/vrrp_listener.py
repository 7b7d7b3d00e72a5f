"""Where keepalived's notifications reach the agent: a unix socket (0600, in
the agent's state dir) that ``router/agent/vrrp_notify.py`` talks to.

One JSON line in, one JSON line out:

    {"router": ID, "state": "MASTER"|"BACKUP"|"FAULT", "at": T}   a transition
                                                  (T: when keepalived ran the script)
    {"router": ID, "check": true}                        keepalived's health check

The answer is one JSON line, ``{"ok": true, ...}`` or ``{"ok": false,
"error": ...}``, "ok" always first (the client reads no more than that).

A transition runs ``RouterRuntime.vrrp_transition`` (conntrackd commits,
HAProxy and strongSwan start or stop); the reply says whether the router is
held. Nothing received is trusted: the router ID must name a router of this
agent, the state is one of three words, and the state actually applied is
the one the router's addresses show (``keepalived.observed_state``).

**Liveness.** For as long as it listens, the listener holds an exclusive
``flock`` on ``vrrp.alive`` in the agent's state dir. keepalived's
``agent_alive`` script is ``flock --nonblock --conflict-exit-code 0 FILE
false``: the lock taken (a live agent) exits 0, a free lock runs ``false``
(no agent: killed, or stopped) and exits 1. That check costs a fork and an
exec, where a Python client costs a second or two on a loaded host, and
keepalived counts a script that times out as failed at once (both
instances then went to FAULT together). The kernel drops the lock when the
agent dies, however it dies; the descriptor is close-on-exec, so no daemon
the agent starts keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from router.errors import RequestError, RouterNotFound
from router.runtime import RouterRuntime
from router.services import keepalived
from router.services.base import RedundancyRole, vrrp_alive_lock, vrrp_notify_socket

log = logging.getLogger(__name__)

MAX_MESSAGE = 512
# How often a listener whose lock another process holds (a previous agent
# on the same state dir still exiting, flock(1) checking it) tries again.
LOCK_RETRY = 0.5


class VrrpListener:
    def __init__(self, agent_state_dir: str, lookup: Callable[[str], RouterRuntime]) -> None:
        """``lookup``: the runtime of a router held (RouterNotFound, RequestError)."""
        self.lookup = lookup
        self.path = vrrp_notify_socket(agent_state_dir)
        self.alive_path = vrrp_alive_lock(agent_state_dir)
        self._sock: socket.socket | None = None
        # The socket file this listener bound (device, inode): a newer agent
        # on the same state dir binds the path anew, and this one's stop
        # must leave that file alone.
        self._bound: tuple[int, int] | None = None
        self._lock_fd: int | None = None
        self._locked = False
        self._lock_mutex = threading.Lock()

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self._hold_alive_lock()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a previous agent's
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            st = os.stat(self.path)
            self._bound = (st.st_dev, st.st_ino)
            os.chmod(self.path, 0o600)
            sock.listen(64)
        except OSError:
            sock.close()
            self.stop()  # not listening: not alive either
            raise
        self._sock = sock
        threading.Thread(target=self._serve, name="vrrp-listener", daemon=True).start()

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        bound, self._bound = self._bound, None
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.path)
            if bound == (st.st_dev, st.st_ino):
                os.unlink(self.path)
        with self._lock_mutex:
            if self._lock_fd is not None:
                # keepalived counts the agent gone from its next check on.
                os.close(self._lock_fd)
                self._lock_fd, self._locked = None, False

    @property
    def holds_alive_lock(self) -> bool:
        return self._locked

    def _hold_alive_lock(self) -> None:
        with self._lock_mutex:
            if self._lock_fd is not None:
                return
            os.makedirs(os.path.dirname(self.alive_path), mode=0o700, exist_ok=True)
            # Close-on-exec (Python's default, said here because it matters):
            # a daemon started by the agent must not keep the agent "alive".
            fd = os.open(self.alive_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_fd = fd
        if self._try_lock(fd):
            return
        # Another process holds it, so keepalived sees an agent alive all the
        # same: this one serves and takes the lock over once that one lets go
        # (an agent start must not fail for a predecessor still exiting).
        log.warning("vrrp listener: %s is locked by another process (another agent on "
                    "this state dir?); taken over when it lets go", self.alive_path)
        threading.Thread(target=self._wait_for_lock, args=(fd,), name="vrrp-alive-lock",
                         daemon=True).start()

    def _try_lock(self, fd: int) -> bool:
        with self._lock_mutex:
            if self._lock_fd != fd:
                return False  # stopped (the descriptor closed)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self._locked = True
            return True

    def _wait_for_lock(self, fd: int) -> None:
        while self._lock_fd == fd and not self._try_lock(fd):
            time.sleep(LOCK_RETRY)

    def _serve(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(conn,), name="vrrp-notify",
                             daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            try:
                data = b""
                while b"\n" not in data and len(data) < MAX_MESSAGE:
                    chunk = conn.recv(MAX_MESSAGE)
                    if not chunk:
                        break
                    data += chunk
                answer = self.handle(data.split(b"\n", 1)[0])
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except BrokenPipeError:
                # The client is gone (keepalived stopped, and its scripts with
                # it): what it said was acted on all the same.
                log.debug("vrrp notification: the client left before the answer")
            except OSError as e:
                log.warning("vrrp notification: %s", e)

    def handle(self, line: bytes) -> dict[str, object]:
        try:
            message = json.loads(line)
            router_id = message["router"]
            if not isinstance(router_id, str):
                raise TypeError("router")
            rt = self.lookup(router_id)
        except (ValueError, KeyError, TypeError, RequestError, RouterNotFound) as e:
            return {"ok": False, "error": str(e)[:100]}
        if message.get("check") is True:
            return {"ok": True}
        reported = message.get("state")
        if reported not in RedundancyRole.STATES:
            return {"ok": False, "error": "state is not MASTER, BACKUP or FAULT"}
        received = time.time()
        state = rt.vrrp_transition(
            lambda cfg: keepalived.observed_state(rt.ctx, cfg, str(reported)))
        sent = message.get("at")
        if isinstance(sent, (int, float)) and not isinstance(sent, bool):
            # Where a slow takeover's seconds go: keepalived -> notify script
            # -> the agent -> the role's services (each instance's log).
            log.info("router %s: VRRP %s notified by keepalived at %.3f: received %.3f s "
                     "later, applied as %s %.3f s after that", router_id, reported, sent,
                     received - sent, state or "-", time.time() - received)
        return {"ok": True, "state": state}
