"""A real VM (libvirt + QEMU TCG) on host A gets its lease from its network's
router on host B: the two hosts' OVS bridges are joined by a veth trunk."""

from __future__ import annotations

import subprocess

import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.nsguest import NamespaceGuest
from tests.lib.vmutil import VmTenant, http_get

pytestmark = pytest.mark.integration


@pytest.fixture
def tenant(ovs_cloud, host_a):
    t = VmTenant(ovs_cloud, host_a)
    yield t
    t.close()


def test_vm_boots_gets_its_ports_lease_and_reaches_guests_by_name(ovs_cloud, host_a, tenant):
    net = tenant.network("web", "10.77.0.0/24")
    vm = tenant.vm("vm1", net)
    try:
        assert vm.state == cpb.VM_STATE_RUNNING
        assert vm.accel in ("qemu", "kvm")
        nic = vm.nics[0]
        assert nic.vlan_id == net.vlan_id
        assert nic.port_id
        assert nic.ip
        port = tenant.api.call(tenant.api.ports.GetPort, pb.GetPortRequest(id=nic.port_id))
        assert port.mac == nic.mac
        assert port.device_id == vm.id
        assert port.hostname == "vm1"

        leases = tenant.wait_leases(vm)
        assert leases == [("eth0", nic.mac, nic.ip)], "exactly its port's IP"

        # The tap is an access port of host A's bridge on the network's VLAN.
        tag = subprocess.run(["ovs-vsctl", "get", "port", nic.device, "tag"],
                             capture_output=True, text=True).stdout.strip()
        assert tag == str(net.vlan_id)

        # A namespace guest on host B (the router's host), same network.
        p2 = tenant.api.call(tenant.api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=net.id, hostname="ns2")))
        g2 = NamespaceGuest(f"{ovs_cloud.prefix}-g-ns2", ovs_cloud.fabric, "gns2")
        try:
            g2.attach(net.vlan_id, p2.mac)
            g2.dhcp()
            assert http_get(g2.netns, f"http://{nic.ip}/").strip() == "vm1"
            # From inside the VM: resolve the other guest by name, ping it and the router.
            out = http_get(g2.netns, f"http://{nic.ip}/cgi-bin/check?ns2")
            assert f"resolved={p2.ip}" in out, out
            assert "ping=ok" in out, out
            # The router by name (router.<domain>, answered by the router itself).
            out = http_get(g2.netns, f"http://{nic.ip}/cgi-bin/check?router")
            assert f"resolved={net.gateway}" in out, out
            assert "ping=ok" in out, out
            # And the other way round: vm1 by name from the namespace guest.
            r = g2.run(["busybox", "ping", "-c", "1", "-W", "3", "vm1"])
            assert r.returncode == 0, r.stdout + r.stderr
        finally:
            g2.destroy()
    finally:
        host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=tenant.md, timeout=60)
