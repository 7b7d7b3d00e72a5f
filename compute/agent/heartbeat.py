"""The compute host's liveness for netmgr: register (again when netmgr has
forgotten the host) and heartbeat every ``interval`` seconds (HostService,
admin token). A host silent past netmgr's grace is DOWN: netmgr makes its
router VMs again on live hosts and marks its guests' ports."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc
from cloudnet.netmgr.v1 import hosts_pb2

from common.periodic import run_every
from compute.agent.netmgr_client import Netmgr

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, netmgr: Netmgr, name: str, register: Callable[[], object],
                 interval: float) -> None:
        self._netmgr = netmgr
        self._name = name
        self._register = register
        self._interval = interval
        self.registered = False

    def beat(self) -> bool:
        md = [("authorization", f"Bearer {self._netmgr.admin_token}")]
        try:
            if not self.registered:
                self._register()
                self.registered = True
            self._netmgr.hosts.Heartbeat(hosts_pb2.HeartbeatRequest(name=self._name),
                                         metadata=md, timeout=10)
            return True
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                self.registered = False  # deleted by the admin: register again
            log.warning("heartbeat to netmgr: %s: %s", e.code().name, e.details())
            return False

    def run(self, stop: threading.Event) -> threading.Thread:
        return run_every(self._interval, stop, self.beat, name="host-heartbeat")
