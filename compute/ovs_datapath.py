"""Waiting until OVS's datapath follows the OpenFlow tables.

A committed bundle changes ovs-vswitchd's OpenFlow tables at once, but its
datapath (kernel or userspace) keeps a cache of flows, each made by
translating some packet through the tables and holding the verdict of that
moment; the revalidator threads bring them up to date after a change,
asynchronously, and the commit's reply does not wait for them. Until they
have, a packet that matches a cached flow gets the old verdict: a port that
just joined a group has its SYN dropped by the cached flow of the last time
it left, and one that just left still opens connections through the cached
allow. A change is in force once a revalidation round that started after it
is over: ``ovs-appctl revalidator/wait`` waits for the end of the round
running or next, asked here on ovs-vswitchd's control socket, kept open
(JSON-RPC, as ``ovs-appctl`` speaks it), not by forking ``ovs-appctl``.

The change's commit wakes the revalidators, and a round that small takes
well under a millisecond: when the question reaches ovs-vswitchd after that
round is over (the agent's thread was not scheduled in between, common on a
busy host), the next round is the periodic one, up to 500 ms later. So
when no answer has come 1 ms after the question, the caller's ``kick``
makes one more change to the tables (a no-op: the same flow again, which
ovs-vswitchd counts as a change and so wakes the revalidators). Not at
once: a question that came in time is answered by the change's own round
within that, and a kick right away cost such changes the revalidators'
5 ms spacing between rounds (medians 0.6 vs 5.6 ms). The question was
written to its socket before the kick to the other: the main loop has read
the question by the time it acts on the kick, so the round the kick starts
is one it waits for. A round already running when the change was committed
may still end first and answer one round early, so the caller asks twice
(``compute.openflow``): the round that answers the second question started
after the first answer. That costs a second round, 5 ms or more after the
first (the revalidators start no two rounds closer).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from common.fabric.base import FabricError


def once_more_after_hangup(op: Callable[[], None], close: Callable[[], None],
                           what: str) -> None:
    """Run ``op`` on a kept connection to ovs-vswitchd; if it hung up
    (restarted, or closed an idle connection), close it and try once more on
    a new one (``op`` opens it). Every other error, or a second hang-up, is
    the fabric's error naming ``what``."""
    for attempt in (1, 2):
        try:
            op()
            return
        except (ConnectionError, BrokenPipeError) as e:
            close()
            if attempt == 2:
                raise FabricError(f"{what}: {e}") from e
        except OSError as e:
            close()
            raise FabricError(f"{what}: {e}") from e


def rundir() -> str:
    return os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")


def control_socket() -> str:
    """ovs-vswitchd's unixctl socket (``<rundir>/ovs-vswitchd.<pid>.ctl``)."""
    try:
        with open(os.path.join(rundir(), "ovs-vswitchd.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        raise FabricError(f"ovs-vswitchd: no pid file in {rundir()}: {e}") from e
    return os.path.join(rundir(), f"ovs-vswitchd.{pid}.ctl")


# How long the answer to revalidator/wait may take before the caller's kick:
# the round its change started answers within this when the question came
# in time for it (a kick then would only add a round).
KICK_AFTER = 0.001


class Revalidation:
    """A kept unixctl connection to ovs-vswitchd; `wait` returns once the
    datapath's cached flows follow every change committed before the call.
    Opened on first use and once again if ovs-vswitchd closed it (a restart:
    a new pid, a new socket)."""

    def __init__(self, timeout: float = 10, path: str | None = None) -> None:
        self.timeout = timeout
        self.path = path
        self._sock: socket.socket | None = None
        self._waker: socket.socket | None = None
        self._buf = ""
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._waker is not None:
            self._waker.close()
            self._waker = None

    def _wake(self) -> None:
        """A ``version`` request on a second kept connection (its answers,
        read and dropped, are not awaited): it wakes the main loop."""
        if self._waker is None:
            self._waker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._waker.settimeout(self.timeout)
            self._waker.connect(self.path or control_socket())
        while select.select([self._waker], [], [], 0)[0]:
            if not self._waker.recv(65536):
                raise ConnectionResetError("ovs-vswitchd closed its control connection")
        self._waker.sendall(json.dumps({"method": "version", "params": [],
                                        "id": next(self._ids)}).encode())

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path or control_socket())
        except OSError:
            sock.close()
            raise
        self._sock, self._buf = sock, ""
        return sock

    def _call(self, method: str, after_sent: Callable[[], None] | None = None) -> Any:
        """`method`'s result (`after_sent` is called once the request is on
        its way, if no answer came within KICK_AFTER). ovs-vswitchd answers
        revalidator/wait from its main loop, which sleeps until something wakes it (up to seconds on
        a quiet bridge) even when the round is over: while no answer has
        come, every few ms a ``version`` request wakes it. Not on this
        connection: ovs-vswitchd reads no request of a connection while it
        owes it an answer, so they would only queue up ahead of the next
        question (which then reached it late, after the round it should
        have seen)."""
        sock = self._sock or self._open()
        ident = next(self._ids)
        sock.sendall(json.dumps({"method": method, "params": [], "id": ident}).encode())
        decoder = json.JSONDecoder()
        deadline = time.monotonic() + self.timeout
        while True:
            text = self._buf.lstrip()
            reply = None
            if text:
                with contextlib.suppress(json.JSONDecodeError):
                    reply, end = decoder.raw_decode(text)
                    self._buf = text[end:]
            if reply is not None:
                if reply.get("id") != ident:
                    continue
                if reply.get("error") is not None:
                    raise FabricError(f"ovs-vswitchd {method}: {str(reply['error'])[:200]}")
                return reply.get("result")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to {method}")
            if not select.select([sock], [], [], 0.005 if after_sent is None else KICK_AFTER)[0]:
                if after_sent is not None:
                    after_sent()
                    after_sent = None
                else:
                    self._wake()
                continue
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("ovs-vswitchd closed its control connection")
            self._buf += data.decode()

    def wait(self, kick: Callable[[], None] | None = None) -> None:
        """Returns once the datapath follows the tables. `kick` makes a
        no-op change to them, so that a round starts after the question
        (module docstring); without it the answer may wait for the periodic
        round."""
        with self._lock:
            once_more_after_hangup(lambda: self._call("revalidator/wait", kick), self.close,
                                   "ovs-vswitchd control socket")
