"""Shared networks (the basic zone): the admin puts one on a provider VLAN and
names the tenants that may use it; they create ports there (port security
mandatory) and each sees only its own; bad input named by field, nothing
created."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from tests.lib.netmgr_cloud import Api, Cloud, bad_fields, rpc_error
from tests.lib.netmgr_edge import Edge

Code = grpc.StatusCode


def counts(cloud: Cloud) -> dict[str, int]:
    return {t: cloud.sql(f"SELECT count(*) FROM {t}")[0][0]
            for t in ("networks", "routers", "ports", "public_ips")}


def shared_net(cloud: Cloud, owner: pb.Tenant, **kw: Any) -> pb.Network:
    fields = {"name": "basic", "cidr": "172.20.0.0/16", "shared": True,
              "provider_vlan": 3000, **kw}
    return cloud.api(tenant=owner.id).CreateNetwork(
        pb.CreateNetworkRequest(network=pb.Network(**fields)))


def test_tenants_share_a_network_and_see_only_their_own_ports(cloud: Cloud) -> None:
    provider, _ = cloud.new_tenant("provider")
    acme, a = cloud.new_tenant("acme")
    globex, g = cloud.new_tenant("globex")
    _, outsider = cloud.new_tenant("outsider")
    net = shared_net(cloud, provider, shared_tenant_ids=[acme.id, globex.id])
    assert (net.shared, net.provider_vlan, net.vlan_id) == (True, 3000, 3000)
    assert list(net.shared_tenant_ids) == [acme.id, globex.id]
    assert a.GetNetwork(pb.GetNetworkRequest(id=net.id)).id == net.id
    assert net.id in [n.id for n in a.ListNetworks(pb.ListNetworksRequest()).networks]
    pa = a.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, name="web")))
    pg = g.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, name="db")))
    assert pa.ip != pg.ip
    assert [p.id for p in a.ListPorts(pb.ListPortsRequest(network_id=net.id)).ports] == [pa.id]
    assert [p.id for p in g.ListPorts(pb.ListPortsRequest()).ports] == [pg.id]
    err = rpc_error(lambda: a.GetPort(pb.GetPortRequest(id=pg.id)))
    assert err.code() == Code.NOT_FOUND
    # A tenant not listed: the network does not exist for it.
    assert net.id not in [n.id for n in outsider.ListNetworks(pb.ListNetworksRequest()).networks]
    err = rpc_error(lambda: outsider.CreatePort(pb.CreatePortRequest(port=pb.Port(
        network_id=net.id))))
    assert err.code() == Code.NOT_FOUND
    # Security groups are mandatory there.
    err = rpc_error(lambda: a.CreatePort(pb.CreatePortRequest(port=pb.Port(
        network_id=net.id, name="fw", port_security=False))))
    assert bad_fields(err) == ["port.port_security"]
    err = rpc_error(lambda: a.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=pa.id, port_security=False),
        update_mask=FieldMask(paths=["port_security"]))))
    assert bad_fields(err) == ["port.port_security"]


def test_a_shared_network_open_to_all(cloud: Cloud) -> None:
    provider, _ = cloud.new_tenant("provider")
    _, anyone = cloud.new_tenant("anyone")
    net = shared_net(cloud, provider)
    port = anyone.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id)))
    assert port.network_id == net.id


def test_only_the_admin_shares_a_network(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    before = counts(cloud)
    err = rpc_error(lambda: api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="basic", cidr="172.20.0.0/16", shared=True, provider_vlan=3000))))
    assert err.code() == Code.PERMISSION_DENIED
    assert counts(cloud) == before


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("guest-range VLAN", {"provider_vlan": 150}, "network.provider_vlan"),
    ("reserved VLAN", {"provider_vlan": 4000}, "network.provider_vlan"),
    ("not a VLAN", {"provider_vlan": 5000}, "network.provider_vlan"),
    ("no VLAN", {"provider_vlan": 0}, "network.provider_vlan"),
    ("VLAN without sharing", {"shared": False}, "network.shared"),
    ("bad tenant id", {"shared_tenant_ids": ["acme"]}, "network.shared_tenant_ids[0]"),
    ("overlapping CIDR", {"cidr": "172.20.128.0/24", "provider_vlan": 3001}, "network.cidr"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD, ids=[c[0] for c in BAD])
def test_bad_shared_networks_are_refused_naming_the_field(
    cloud: Cloud, case: str, fields: dict[str, Any], field: str
) -> None:
    provider, _ = cloud.new_tenant("provider")
    other, _ = cloud.new_tenant("other")
    shared_net(cloud, provider)  # 172.20.0.0/16 on VLAN 3000
    before = counts(cloud)
    err = rpc_error(lambda: shared_net(cloud, other, name="second",
                                       **{"cidr": "172.21.0.0/16", **fields}))
    assert err.code() == Code.INVALID_ARGUMENT, case
    assert field in bad_fields(err), (case, bad_fields(err))
    assert counts(cloud) == before


def test_a_vlan_in_use_and_an_unknown_tenant(cloud: Cloud) -> None:
    provider, _ = cloud.new_tenant("provider")
    shared_net(cloud, provider)
    before = counts(cloud)
    err = rpc_error(lambda: shared_net(cloud, provider, name="again", cidr="172.21.0.0/16"))
    assert err.code() == Code.ALREADY_EXISTS
    assert "network.provider_vlan" in (err.details() or "")
    err = rpc_error(lambda: shared_net(cloud, provider, name="again", cidr="172.21.0.0/16",
                                       provider_vlan=3001, shared_tenant_ids=[
                                           "00000000-0000-4000-8000-000000000000"]))
    assert err.code() == Code.NOT_FOUND
    assert counts(cloud) == before


def test_an_elastic_ip_is_static_nat_on_the_shared_networks_router(cloud: Cloud) -> None:
    provider, _ = cloud.new_tenant("provider")
    _, acme = cloud.new_tenant("acme")
    _, globex = cloud.new_tenant("globex")
    net = shared_net(cloud, provider)
    port = acme.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, name="web")))
    edge = Edge(cloud, acme)
    ip = edge.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=net.id))
    nat = edge.CreateStaticNat(epb.CreateStaticNatRequest(static_nat=epb.StaticNat(
        public_ip_id=ip.id, port_id=port.id)))
    assert (nat.network_id, nat.private_ip, nat.public_ip) == (net.id, port.ip, ip.ip)
    snap = cloud.store.router_snapshot(net.router_id)
    assert [(n.port_id, n.public_ip) for n in snap.edge.static_nats] == [(port.id, ip.ip)]
    assert port.id in [p.id for p in snap.ports], "the router serves every tenant's port"
    # Another tenant sees neither the address nor the NAT.
    other = Edge(cloud, globex)
    assert list(other.ListStaticNats(epb.ListStaticNatsRequest()).static_nats) == []
    assert ip.id not in [p.id for p in other.ListPublicIps(
        epb.ListPublicIpsRequest()).public_ips]


def set_tenants(api: Api, net: pb.Network, tenant_ids: list[str]) -> pb.Network:
    return api.UpdateNetwork(pb.UpdateNetworkRequest(
        network=pb.Network(id=net.id, shared_tenant_ids=tenant_ids),
        update_mask=FieldMask(paths=["shared_tenant_ids"])))


def test_the_admin_changes_who_may_use_a_shared_network(cloud: Cloud) -> None:
    provider, provider_api = cloud.new_tenant("provider")
    acme, a = cloud.new_tenant("acme")
    globex, g = cloud.new_tenant("globex")
    admin = cloud.api(tenant=provider.id)
    net = shared_net(cloud, provider, shared_tenant_ids=[acme.id])
    assert rpc_error(lambda: g.CreatePort(pb.CreatePortRequest(port=pb.Port(
        network_id=net.id)))).code() == Code.NOT_FOUND
    net = set_tenants(admin, net, [acme.id, globex.id])
    assert list(net.shared_tenant_ids) == [acme.id, globex.id]
    port = g.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id)))
    # The owner's own token does not open its network to others: the admin does.
    err = rpc_error(lambda: set_tenants(provider_api, net, []))
    assert err.code() == Code.PERMISSION_DENIED
    assert "network.shared_tenant_ids" in (err.details() or "")
    # Removing a tenant that still has ports there is refused, naming them.
    err = rpc_error(lambda: set_tenants(admin, net, [acme.id]))
    assert err.code() == Code.FAILED_PRECONDITION
    assert "1 port" in (err.details() or "")
    assert globex.id in (err.details() or "")
    # A list naming only the owner closes it to everyone else: the same check.
    err = rpc_error(lambda: set_tenants(admin, net, [provider.id]))
    assert err.code() == Code.FAILED_PRECONDITION
    assert a.GetNetwork(pb.GetNetworkRequest(id=net.id)).shared_tenant_ids == [
        acme.id, globex.id], "nothing changed"
    # Open to every tenant (an empty list) never strands a port.
    assert list(set_tenants(admin, net, []).shared_tenant_ids) == []
    g.DeletePort(pb.DeletePortRequest(id=port.id))
    net = set_tenants(admin, net, [acme.id])
    assert list(net.shared_tenant_ids) == [acme.id]
    assert net.id not in [n.id for n in g.ListNetworks(pb.ListNetworksRequest()).networks]


BAD_TENANT_LISTS: list[tuple[str, list[str], str, grpc.StatusCode]] = [
    ("not an id", ["acme"], "network.shared_tenant_ids[0]", Code.INVALID_ARGUMENT),
    ("twice", ["{acme}", "{acme}"], "network.shared_tenant_ids[1]", Code.INVALID_ARGUMENT),
    ("unknown tenant", ["00000000-0000-4000-8000-000000000000"],
     "network.shared_tenant_ids[0]", Code.NOT_FOUND),
    ("too many", [f"00000000-0000-4000-8000-{i:012d}" for i in range(257)],
     "network.shared_tenant_ids", Code.INVALID_ARGUMENT),
]


@pytest.mark.parametrize(("case", "ids", "field", "code"), BAD_TENANT_LISTS,
                         ids=[c[0] for c in BAD_TENANT_LISTS])
def test_bad_tenant_lists_are_refused_naming_the_field(
    cloud: Cloud, case: str, ids: list[str], field: str, code: grpc.StatusCode
) -> None:
    provider, _ = cloud.new_tenant("provider")
    acme, _ = cloud.new_tenant("acme")
    net = shared_net(cloud, provider, shared_tenant_ids=[acme.id])
    admin = cloud.api(tenant=provider.id)
    err = rpc_error(lambda: set_tenants(admin, net, [i.format(acme=acme.id) for i in ids]))
    assert err.code() == code, case
    assert field in (err.details() or ""), (case, err.details())
    assert list(admin.GetNetwork(pb.GetNetworkRequest(id=net.id)).shared_tenant_ids) == [
        acme.id]


def test_a_network_that_is_not_shared_has_no_tenant_list(cloud: Cloud) -> None:
    provider, _ = cloud.new_tenant("provider")
    acme, _ = cloud.new_tenant("acme")
    admin = cloud.api(tenant=provider.id)
    net = admin.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="private", cidr="10.30.0.0/24")))
    err = rpc_error(lambda: set_tenants(admin, net, [acme.id]))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == ["network.shared_tenant_ids"]
