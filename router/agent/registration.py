"""A router host's registration with netmgr: the agent registers its host
(role "router", its own gRPC address) and heartbeats, so netmgr places
namespace routers on it and notices when it falls silent
(``cloudnet.router.v1.RouterHostRegistry``, admin token).

    cloudnet-agent --listen 10.0.0.5:7080 --netmgr 10.0.0.1:7070 \\
        --netmgr-token-file /etc/cloudnet/admin.token --host-name rhost1
"""

from __future__ import annotations

import logging
import os
import threading

import grpc
from cloudnet.router.v1 import registration_pb2 as rpb
from cloudnet.router.v1 import registration_pb2_grpc

from common.periodic import run_every

log = logging.getLogger(__name__)


def memory_mib() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return max(1, int(line.split()[1]) // 1024)
    except OSError:
        pass
    return 1


class Registration:
    def __init__(self, channel: grpc.Channel, token: str, name: str, address: str, fabric: str,
                 interval: float) -> None:
        """``channel``: to netmgr (any replica), made by the agent's main
        as its other clients' channels are (TLS or not); closed at the end."""
        self._channel = channel
        self._stub = registration_pb2_grpc.RouterHostRegistryStub(self._channel)
        self._md = (("authorization", f"Bearer {token}"),)
        self._host = rpb.RegisterRouterHostRequest(
            name=name, address=address, fabric=fabric, vcpus=os.cpu_count() or 1,
            memory_mib=memory_mib())
        self._interval = interval
        self._registered = False

    def beat(self) -> bool:
        """Register (first, or when netmgr forgot the host), then heartbeat."""
        try:
            if not self._registered:
                self._stub.RegisterRouterHost(self._host, metadata=self._md, timeout=10)
                self._registered = True
                log.info("registered as router host %s (%s)", self._host.name,
                         self._host.address)
            self._stub.RouterHostHeartbeat(rpb.RouterHostHeartbeatRequest(name=self._host.name),
                                           metadata=self._md, timeout=10)
            return True
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                self._registered = False
            log.warning("heartbeat to netmgr: %s: %s", e.code().name, e.details())
            return False

    def run(self, stop: threading.Event) -> threading.Thread:
        return run_every(self._interval, stop, self.beat, name="host-heartbeat",
                         finally_=self._channel.close)
