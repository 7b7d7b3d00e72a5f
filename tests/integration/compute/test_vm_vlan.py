"""Two tenants, the same CIDR, one VM each on host A: each VM is reachable only
on its own VLAN, and the trunk between host A and the routers' host B carries
their frames 802.1Q-tagged with their networks' VLAN IDs, never untagged."""

from __future__ import annotations

import subprocess

import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.nsguest import NamespaceGuest
from common.fabric.ovs_firewall import OvsFirewall
from common.fabric.port_firewall import Port, Rule
from tests.lib.pkt import capture
from tests.lib.vmutil import VmTenant, http_get

pytestmark = pytest.mark.integration


def test_same_cidr_two_tenants_isolated_and_tagged_on_the_trunk(ovs_cloud, host_a, tmp_path):
    t1, t2 = VmTenant(ovs_cloud, host_a), VmTenant(ovs_cloud, host_a)
    vms: list[tuple[VmTenant, cpb.Vm]] = []
    guests: list[NamespaceGuest] = []
    try:
        n1, n2 = t1.network("same", "10.90.0.0/24"), t2.network("same", "10.90.0.0/24")
        assert n1.vlan_id != n2.vlan_id
        with capture(None, host_a.trunk[0], str(tmp_path / "trunk.pcap")) as pkts:
            v1 = t1.vm("blue", n1)
            vms.append((t1, v1))
            v2 = t2.vm("red", n2)
            vms.append((t2, v2))
            t1.wait_leases(v1)
            t2.wait_leases(v2)
        assert v1.nics[0].ip == v2.nics[0].ip, "same CIDR, same first address"
        ip = v1.nics[0].ip

        # A namespace guest per tenant on host B asks "who is <ip>?" over HTTP.
        for t, net, name in ((t1, n1, "blue"), (t2, n2, "red")):
            port = t.api.call(t.api.ports.CreatePort, pb.CreatePortRequest(
                port=pb.Port(network_id=net.id, hostname=f"probe-{name}")))
            g = NamespaceGuest(f"{ovs_cloud.prefix}-g-{name}", ovs_cloud.fabric,
                               f"gp{port.id.replace('-', '')[:10]}")
            guests.append(g)
            g.attach(net.vlan_id, port.mac)
            g.dhcp()
            assert http_get(g.netns, f"http://{ip}/").strip() == name

        by_mac = {v1.nics[0].mac: n1.vlan_id, v2.nics[0].mac: n2.vlan_id}
        tenant_frames = [p for p in pkts if p.src in by_mac]
        assert {p.src for p in tenant_frames} == set(by_mac), "both VMs' DHCP crossed the trunk"
        untagged = [p.summary() for p in tenant_frames if not p.haslayer("Dot1Q")]
        assert not untagged, f"untagged tenant frames on the trunk: {untagged[:3]}"
        assert all(p["Dot1Q"].vlan == by_mac[p.src] for p in tenant_frames)
        # The routers' answers come back tagged too.
        replies = [p for p in pkts if p.haslayer("Dot1Q") and p.dst in by_mac]
        assert replies
        assert all(p["Dot1Q"].vlan == by_mac[p.dst] for p in replies)
    finally:
        for g in guests:
            g.destroy()
        for t, vm in vms:
            host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=t.md, timeout=60)
        t1.close()
        t2.close()


def test_vm_own_vlan_tags_never_reach_another_vlan(ovs_cloud, host_a, tmp_path):
    """The guest itself sends 802.1Q-tagged (and double-tagged) ARP broadcasts
    from inside the VM: its access port drops them; only its untagged frames
    cross the trunk, tagged with its own VLAN."""
    t1, t2 = VmTenant(ovs_cloud, host_a), VmTenant(ovs_cloud, host_a)
    vm = None
    guests: list[NamespaceGuest] = []
    try:
        n1, n2 = t1.network("own", "10.91.0.0/24"), t2.network("victim", "10.91.0.0/24")
        vm = t1.vm("hopper", n1)
        t1.wait_leases(vm)
        mode = subprocess.run(["ovs-vsctl", "get", "port", vm.nics[0].device, "vlan_mode"],
                              capture_output=True, text=True).stdout.strip()
        assert mode == "access"

        def ns_guest(t: VmTenant, net: pb.Network, name: str) -> NamespaceGuest:
            port = t.api.call(t.api.ports.CreatePort, pb.CreatePortRequest(
                port=pb.Port(network_id=net.id, hostname=name)))
            g = NamespaceGuest(f"{ovs_cloud.prefix}-g-{name}", ovs_cloud.fabric,
                               f"gp{port.id.replace('-', '')[:10]}")
            guests.append(g)
            g.attach(net.vlan_id, port.mac)
            g.dhcp()
            return g

        g1, g2 = ns_guest(t1, n1, "ctl"), ns_guest(t2, n2, "victim")
        hops = [f"{n2.vlan_id}", f"{n1.vlan_id}.{n2.vlan_id}", f"{n2.vlan_id}.{n2.vlan_id}"]
        with capture(g2.netns, "eth0", str(tmp_path / "victim.pcap")) as on_victim, \
                capture(None, host_a.trunk[0], str(tmp_path / "trunk.pcap")) as on_trunk:
            for spec in hops:
                out = http_get(g1.netns, f"http://{vm.nics[0].ip}/cgi-bin/tagsend?{spec}")
                assert "packets" in out, out
                assert not out.startswith("ERROR"), out
                assert not out.rstrip().endswith(": 0 packets"), out
            # Positive control: the same ARP untagged crosses, in the VM's own VLAN.
            http_get(g1.netns, f"http://{vm.nics[0].ip}/cgi-bin/tagsend?")

        def probes(pkts):
            return [p for p in pkts if p.haslayer("ARP") and p["ARP"].pdst == "10.250.99.2"]

        assert not probes(on_victim), "a guest's own tag reached another VLAN"
        crossed = probes(on_trunk)
        assert crossed, "the untagged control ARP crossed the trunk"
        assert all(p.src == vm.nics[0].mac and p["Dot1Q"].vlan == n1.vlan_id
                   and not p["Dot1Q"].payload.haslayer("Dot1Q") for p in crossed), \
            [p.summary() for p in crossed]
    finally:
        for g in guests:
            g.destroy()
        if vm is not None:
            host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=t1.md, timeout=60)
        t1.close()
        t2.close()


# A filtered VM (security groups on OVS): the module's cloud and host A, shared.
DEFAULT = "00000000-0000-4000-8000-00000000d0d0"


def test_a_vm_on_ovs_is_filtered_by_its_groups(ovs_cloud, host_a):
    """A libvirt VM on Open vSwitch filtered like a namespace guest: the OVS
    pipeline with ct() on the VM's tap, as the compute agent applies what
    netmgr pushes. Its DHCP lease comes through the filters; a namespace guest
    of the same tenant on host B reaches the VM's HTTP server only while it is
    a member of the VM's default group."""
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
