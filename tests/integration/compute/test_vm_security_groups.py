"""A libvirt VM on Open vSwitch (host A) filtered like a namespace guest: the
OVS pipeline with ct() on the VM's tap, as the compute agent applies what
netmgr pushes. A namespace guest of the same tenant on host B reaches the
VM's HTTP server only while it is a member of the VM's default group, and
the VM's own DHCP lease (from the router, through the filters) and its
replies to allowed traffic pass."""

from __future__ import annotations

import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.nsguest import NamespaceGuest
from common.fabric.ovs_firewall import OvsFirewall
from common.fabric.port_firewall import Port, Rule
from tests.lib.vmutil import VmTenant, http_get

pytestmark = pytest.mark.integration
DEFAULT = "00000000-0000-4000-8000-00000000d0d0"


def test_a_vm_on_ovs_is_filtered_by_its_groups(ovs_cloud, host_a):
    t = VmTenant(ovs_cloud, host_a)
    fw = OvsFirewall(host_a.fabric.bridge)
    vm = None
    guest = None
    try:
        net = t.network("sg", "10.91.0.0/24")
        # The VM's tap is known once the domain exists; filter it from its
        # first boot on: the lease must come through the filters.
        vm = t.vm("web", net)
        nic = vm.nics[0]
        fw.setup()
        rules = (Rule("egress"), Rule("ingress", remote_group_id=DEFAULT))
        fw.apply([Port(nic.device, nic.mac, (nic.ip,), (), rules)], {DEFAULT: [nic.ip]})
        t.wait_leases(vm)

        port = t.api.call(t.api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=net.id, hostname="probe")))
        guest = NamespaceGuest(f"{ovs_cloud.prefix}-g-sg", ovs_cloud.fabric,
                               f"gp{port.id.replace('-', '')[:10]}")
        guest.attach(net.vlan_id, port.mac)
        guest.dhcp()
        url = f"http://{nic.ip}/"
        assert http_get(guest.netns, url, timeout=3).startswith("ERROR"), \
            "not a member of the VM's default group"
        fw.set_members(DEFAULT, [nic.ip, port.ip])
        assert http_get(guest.netns, url).strip() == "web", "joined the group"
        fw.set_members(DEFAULT, [nic.ip])
        assert http_get(guest.netns, url, timeout=3).startswith("ERROR"), "left the group"
    finally:
        if guest is not None:
            guest.destroy()
        if vm is not None:
            fw.apply([], {})
            host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=t.md, timeout=60)
        t.close()
