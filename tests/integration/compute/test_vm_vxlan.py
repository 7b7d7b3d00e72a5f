"""VXLAN end to end: a real VM on host A gets its lease from its network's
router on host B, the two hosts joined only by an underlay "wire" carrying
VXLAN (each host's underlay address in a namespace of its own). The router
agent runs on the VXLAN fabric too (`--fabric vxlan`)."""

from __future__ import annotations

import os
import uuid

import grpc
import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.compute.v1 import compute_pb2_grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.nsguest import NamespaceGuest
from common.fabric.vxlan import VxlanFabric
from tests.lib.allinone import free_port
from tests.lib.compute_host import stop_compute
from tests.lib.pkt import capture
from tests.lib.underlay import UL_A, UL_B, wire
from tests.lib.vmutil import VmTenant, http_get

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def vxlan_cloud(host_services, tmp_path_factory):
    from aio.allinone import AllInOne

    prefix = f"x{uuid.uuid4().hex[:5]}"
    aio = AllInOne(insecure=True, prefix=prefix, state_dir=str(tmp_path_factory.mktemp("cloud")),
                   listen=f"127.0.0.1:{free_port()}", fabric_kind="vxlan",
                   vxlan_local=UL_B, vxlan_remotes=(UL_A,))
    try:
        # The underlay exists before the fabric binds its VXLAN sockets to it.
        wire(f"{prefix}-ula", aio.underlay_ns)
        aio.up()
        yield aio
    finally:
        aio.down()
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        assert not leftovers, f"namespaces left behind: {leftovers}"


class VxlanHost:
    """Host A: a compute agent (in this process) on its own VXLAN fabric."""

    def __init__(self, cloud, state_dir: str, image_dir: str) -> None:
        from compute.agent.netmgr_client import Netmgr
        from compute.agent.server import create_server
        from compute.agent.service import Compute
        from compute.host import HostConfig

        self.cloud = cloud
        self.fabric = VxlanFabric(f"{cloud.prefix[:5]}a", f"{cloud.prefix}-ula", UL_A, [UL_B])
        self.fabric.setup()
        cfg = HostConfig(name=f"{cloud.prefix}-ha", state_dir=state_dir, netmgr=cloud.listen,
                         admin_token=cloud.admin_token, fabric_kind="vxlan", fabric=self.fabric,
                         images={"tiny": image_dir}, address="", accel="qemu")
        self.compute = Compute(cfg, Netmgr(cloud.listen, cloud.admin_token))
        self.server, port = create_server(self.compute, "127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = compute_pb2_grpc.ComputeServiceStub(self.channel)

    def close(self) -> None:
        try:
            leftover = stop_compute(self.compute, self.server, self.channel)
        finally:
            self.fabric.teardown()
        assert not leftover, f"domains left behind: {leftover}"


@pytest.fixture(scope="module")
def vxlan_host_a(vxlan_cloud, guest_image, tmp_path_factory):
    h = VxlanHost(vxlan_cloud, str(tmp_path_factory.mktemp("host-a")), guest_image)
    try:
        yield h
    finally:
        h.close()


def test_vm_on_host_a_leases_from_the_router_on_host_b_over_vxlan(vxlan_cloud, vxlan_host_a,
                                                                  tmp_path):
    from scapy.layers.vxlan import VXLAN

    t = VmTenant(vxlan_cloud, vxlan_host_a)
    try:
        net = t.network("vx", "10.78.0.0/24")
        underlay_a = f"{vxlan_cloud.prefix}-ula"
        with capture(underlay_a, "wire", str(tmp_path / "underlay.pcap")) as pkts:
            vm = t.vm("vm1", net)
            try:
                nic = vm.nics[0]
                assert t.wait_leases(vm) == [("eth0", nic.mac, nic.ip)], "exactly its port's IP"
                # A namespace guest on host B (the router's host) reaches the VM's web server.
                p2 = t.api.call(t.api.ports.CreatePort, pb.CreatePortRequest(
                    port=pb.Port(network_id=net.id, hostname="nsb")))
                g2 = NamespaceGuest(f"{vxlan_cloud.prefix}-g-nsb", vxlan_cloud.fabric, "gnsb")
                try:
                    g2.attach(net.vlan_id, p2.mac)
                    assert g2.dhcp().ip == p2.ip
                    assert http_get(g2.netns, f"http://{nic.ip}/").strip() == "vm1"
                finally:
                    g2.destroy()
            finally:
                vxlan_host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=t.md,
                                           timeout=60)
        # The underlay carried the network's traffic in VXLAN with its VNI (the
        # network's segment ID), and no tenant frame bare.
        vnis = {p[VXLAN].vni for p in pkts if VXLAN in p}
        assert net.vlan_id in vnis, vnis
    finally:
        t.close()

