"""Two tenants, the same CIDR, one VM each on host A: each VM is reachable only
on its own VLAN, and the trunk between host A and the routers' host B carries
their frames 802.1Q-tagged with their networks' VLAN IDs, never untagged."""

from __future__ import annotations

import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from compute.nsguest import NamespaceGuest
from tests.integration.compute.pkt import capture
from tests.integration.compute.vmutil import VmTenant, http_get

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
        assert replies and all(p["Dot1Q"].vlan == by_mac[p.dst] for p in replies)
    finally:
        for g in guests:
            g.destroy()
        for t, vm in vms:
            host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=t.md, timeout=60)
        t1.close()
        t2.close()
