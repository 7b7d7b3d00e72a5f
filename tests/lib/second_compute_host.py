"""A second compute host for the VM backend's tests: a compute agent in the
test process, heartbeating, on its own OVS bridge trunked to an all-in-one
cloud's fabric, offering the router image; and how to wait on hosts."""

from __future__ import annotations

import threading
import time

import grpc
from cloudnet.netmgr.v1 import hosts_pb2 as hpb
from cloudnet.netmgr.v1 import hosts_pb2_grpc

from aio import vm_backend
from aio.allinone import AllInOne


class SecondHost:
    """A second compute agent (in this process, heartbeating) on its own OVS
    bridge trunked to the cloud's fabric, offering the router image."""

    def __init__(self, aio: AllInOne, state_dir: str) -> None:
        from common.fabric.ovs import OvsFabric, connect_trunk
        from compute.agent.netmgr_client import Netmgr
        from compute.agent.server import create_server
        from compute.agent.service import Compute
        from compute.host import HostConfig

        self.aio = aio
        self.name = f"{aio.prefix}-c2"
        self.fabric = OvsFabric(f"{aio.prefix}-c2")
        self.fabric.setup()
        self.trunk = (f"{aio.prefix}-c2t", f"{aio.prefix}-c2u")
        connect_trunk(self.fabric, aio.fabric, *self.trunk)  # type: ignore[arg-type]
        cfg = HostConfig(name=self.name, state_dir=state_dir, netmgr=aio.listen,
                         admin_token=aio.admin_token, fabric_kind="ovs", fabric=self.fabric,
                         images={"router": vm_backend.ROUTER_IMAGE_DIR}, address="",
                         accel="qemu", fault_channel=aio.fault_channel)
        self.compute = Compute(cfg, Netmgr(aio.listen, aio.admin_token))
        self.server, port = create_server(self.compute, "127.0.0.1:0")
        self.server.start()
        cfg.address = f"127.0.0.1:{port}"
        self._heartbeat()

    def _heartbeat(self) -> None:
        from compute.agent.heartbeat import Heartbeat

        self.stop = threading.Event()
        Heartbeat(self.compute.netmgr, self.name, self.compute.register, 0.5).run(self.stop)

    def kill_agent(self) -> None:
        """The agent gone as if killed: no more heartbeats, its API closed;
        its VMs run on (libvirt's, not the agent's)."""
        self.stop.set()
        self.server.stop(grace=0).wait()

    def start_agent(self) -> None:
        """The agent back on its address, heartbeating again."""
        from compute.agent.server import create_server

        self.server, _ = create_server(self.compute, self.compute.cfg.address)
        self.server.start()
        self._heartbeat()

    def domains(self) -> list[str]:
        return list(self.compute.driver.domains())

    def close(self) -> None:
        from common.fabric.ovs import disconnect_trunk
        from compute import libvirt_driver as lv

        self.stop.set()
        try:
            for d in lv.Driver(f"{self.compute.cfg.domain_prefix}r-").domains():
                lv.Driver(f"{self.compute.cfg.domain_prefix}r-").remove(d)
            self.server.stop(grace=1).wait()
            self.compute.netmgr.close()
        finally:
            disconnect_trunk(self.fabric, self.aio.fabric, *self.trunk)  # type: ignore[arg-type]
            self.fabric.teardown()


def host_state(aio: AllInOne, name: str) -> str:
    with grpc.insecure_channel(aio.listen) as ch:
        hosts = hosts_pb2_grpc.HostServiceStub(ch).ListHosts(
            hpb.ListHostsRequest(), metadata=(("authorization", f"Bearer {aio.admin_token}"),),
            timeout=10).hosts
    return next((hpb.HostState.Name(h.state) for h in hosts if h.name == name), "")


def wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
