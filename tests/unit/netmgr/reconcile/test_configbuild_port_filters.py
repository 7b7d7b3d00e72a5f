"""What netmgr pushes a compute host: its bound ports with the rules of their
groups flattened, and the members of every remote group those rules name
(ports on any host, their allowed pairs included); another tenant's ports
are never members; port security off is an unfiltered port."""

from __future__ import annotations

from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import security_group_pb2 as sgpb
from google.protobuf.field_mask_pb2 import FieldMask

from netmgr.model.hosts import HostSpec
from netmgr.reconcile.configbuild.port_filters import build_port_filters
from tests.lib.netmgr_cloud import Cloud, bad_fields, rpc_error


def test_a_hosts_filters(cloud: Cloud) -> None:
    for name in ("h1", "h2"):
        cloud.store.hosts.register(HostSpec(name, f"unix:///run/{name}.sock", "linuxbridge",
                                            2, 1024))
    _, acme = cloud.new_tenant("acme")
    _, other = cloud.new_tenant("other")
    net = acme.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="n",
                                                                        cidr="10.0.0.0/24")))
    onet = other.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="n",
                                                                          cidr="10.0.0.0/24")))
    web = acme.CreateSecurityGroup(sgpb.CreateSecurityGroupRequest(
        security_group=sgpb.SecurityGroup(name="web")))
    acme.CreateSecurityGroupRule(sgpb.CreateSecurityGroupRuleRequest(rule=sgpb.SecurityGroupRule(
        security_group_id=web.id, direction="ingress", protocol="tcp", port_min=80,
        remote_group_id=next(g.id for g in acme.ListSecurityGroups(
            sgpb.ListSecurityGroupsRequest()).security_groups if g.name == "default"))))

    def port(api, network, name, **kw):  # type: ignore[no-untyped-def]
        return api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=network.id,
                                                                name=name, **kw)))

    a1 = port(acme, net, "a1", binding_host="h1", security_group_ids=[web.id])
    a2 = port(acme, net, "a2", binding_host="h2", allowed_address_pairs=[
        sgpb.AllowedAddressPair(ip="10.0.0.200")])
    a3 = port(acme, net, "a3", binding_host="h1", port_security=False)
    port(acme, net, "a4")  # unbound, in the default group
    port(other, onet, "o1", binding_host="h1")

    got = build_port_filters(cloud.store.security_groups.host_filters("h1"), 7)
    assert (got.generation, got.host) == (7, "h1")
    by_id = {p.port_id: p for p in got.ports}
    assert set(by_id) >= {a1.id, a3.id}
    assert a2.id not in by_id, "bound to h2"
    assert by_id[a3.id].unfiltered
    assert not by_id[a3.id].rules
    rules = by_id[a1.id].rules
    assert [(r.direction, r.protocol, r.port_min, r.port_max) for r in rules] == [
        ("ingress", "tcp", 80, 80)]
    members = {g.group_id: sorted(g.addresses) for g in got.groups}
    default_id = rules[0].remote_group_id
    # acme's default group: a2 (and its pair) and a4, on any host; never a1 (web
    # only), a3 (no port security) or another tenant's port.
    a4_ip = acme.ListPorts(pb.ListPortsRequest()).ports[3].ip
    assert members[default_id] == sorted([a2.ip, "10.0.0.200", a4_ip])

    acme.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=a1.id, binding_host=""),
                                         update_mask=FieldMask(paths=["binding_host"])))
    got = build_port_filters(cloud.store.security_groups.host_filters("h1"), 8)
    assert a1.id not in {p.port_id for p in got.ports}
    err = rpc_error(lambda: port(acme, net, "x", binding_host="nowhere"))
    assert bad_fields(err) == ["port.binding_host"]
