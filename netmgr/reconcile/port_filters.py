"""Pushes every compute host the filters of the ports bound to it
(``configbuild.port_filters``), level-triggered: the whole host state at every
change (the agent applies only its differences), and again every
``resync_s`` (a host that restarted, or missed a push, catches up).

A change is told by ``changed()`` (a port's change through the reconciler's
``notify``, a group's or rule's by the security group API); pushes run on
one thread, all bound hosts at a time. A host that cannot be reached is
logged and retried at the next change or resync.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
from cloudnet.compute.v1 import port_filters_pb2_grpc as rpc

from common.channels import make_channel
from common.tls import ROLE_AGENT, TlsFiles
from netmgr.reconcile.configbuild.port_filters import build_port_filters
from netmgr.reconcile.store_view import PortFilterStore

log = logging.getLogger("cloudnet.netmgr.port_filters")

# The least time between two passes (a pass is one look-up of the bound hosts).
PASS_SPACING = 0.25


class PortFilterPusher:
    def __init__(self, store: PortFilterStore, admin_token: str, resync_s: float = 30.0,
                 compute_tls: TlsFiles | None = None, spacing: float = PASS_SPACING) -> None:
        self._spacing = spacing
        # netmgr's certificate for the compute agents (None: plaintext).
        self._compute_tls = compute_tls
        self._store = store
        self._admin_token = admin_token
        self._resync_s = resync_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channels: dict[str, grpc.Channel] = {}
        # Raised at every push and kept above any earlier run's (agents
        # ignore a push older than the last they applied).
        self._generation = time.time_ns() // 1000
        self.last_errors: dict[str, str] = {}

    def changed(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="port-filters", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for ch in self._channels.values():
            ch.close()

    def _loop(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait(self._resync_s)
            # Spaced from the last pass: every API change wakes this loop, and
            # each pass looks the bound hosts up; the changes of a burst (a
            # network's ports created one call after the other) are one pass.
            self._stop.wait(max(0.0, last + self._spacing - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            last = time.monotonic()
            try:
                self.push_all()
            except Exception:  # the next change or resync tries again
                log.exception("port filters: push failed")

    def push_all(self) -> None:
        bound = self._store.security_groups.bound_hosts()
        if not bound:
            return  # no port on a compute host: nothing to push (nor to look up)
        addresses = {h.name: h.address for h in self._store.hosts.list()}
        for host in bound:
            address = addresses.get(host)
            if not address:
                continue
            self._generation += 1
            msg = build_port_filters(self._store.security_groups.host_filters(host),
                                     self._generation)
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = make_channel(
                    address, tls=self._compute_tls, role=ROLE_AGENT)
            try:
                rpc.PortFilterServiceStub(channel).ApplyPortFilters(
                    msg, metadata=[("authorization", f"Bearer {self._admin_token}")],
                    timeout=30)
                self.last_errors.pop(host, None)
            except grpc.RpcError as e:
                self.last_errors[host] = f"{e.code().name}: {e.details()}"
                log.warning("port filters: host %s: %s", host, self.last_errors[host])
