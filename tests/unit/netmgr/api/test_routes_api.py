"""Static routes and private gateways against a real server: validation
naming the field with nothing created, and the router config they give."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.router.v1 import agent_pb2 as apb
from google.protobuf.field_mask_pb2 import FieldMask

from netmgr.model.vpc import DEFAULT_DENY_ID
from netmgr.reconcile.configbuild.router import build_router_config
from tests.lib.netmgr_cloud import ADMIN, VpcApi, bad_fields, rpc_error

Code = grpc.StatusCode


@pytest.fixture
def vpc2(acme_vpc):
    cloud, api = acme_vpc
    # Private gateways' VLANs come from this range (2000 first).
    cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(private_gateway_vlan_min=2000, private_gateway_vlan_max=2010),
        update_mask=FieldMask(paths=["private_gateway_vlan_min", "private_gateway_vlan_max"])))
    vpc = api.vpc("v", "10.0.0.0/16")
    web = api.tier(vpc.id, "web", "10.0.1.0/24")
    return cloud, api, vpc, web


def as_admin(cloud, api) -> VpcApi:
    """The admin acting as ``api``'s tenant (it may name a private gateway's VLAN)."""
    return VpcApi(cloud, cloud.api(ADMIN, api.WhoAmI(pb.WhoAmIRequest()).tenant_id))


def route(api, vpc_id: str, cidr: str, next_hop: str) -> vpb.StaticRoute:
    return api.CreateStaticRoute(vpb.CreateStaticRouteRequest(
        static_route=vpb.StaticRoute(vpc_id=vpc_id, cidr=cidr, next_hop=next_hop)))


def gateway(api, vpc_id: str, **kw: Any) -> vpb.PrivateGateway:
    fields = dict(vpc_id=vpc_id, address="192.168.50.2/24", gateway="192.168.50.1")
    fields.update(kw)
    return api.CreatePrivateGateway(vpb.CreatePrivateGatewayRequest(
        private_gateway=vpb.PrivateGateway(**fields)))


def count(cloud, table: str) -> int:
    return cloud.sql(f"SELECT count(*) FROM {table}")[0][0]


BAD_ROUTES = [
    (("172.16.0.0/12", "10.0.9.5"), "static_route.next_hop"),  # outside every tier
    (("172.16.0.0/12", "10.0.1.1"), "static_route.next_hop"),  # the router itself
    (("172.16.0.0/12", "10.0.1.255"), "static_route.next_hop"),
    (("172.16.0.0/12", "nope"), "static_route.next_hop"),
    (("0.0.0.0/0", "10.0.1.5"), "static_route.cidr"),
    (("172.16.0.1/12", "10.0.1.5"), "static_route.cidr"),
    (("172.16.0.0/33", "10.0.1.5"), "static_route.cidr"),
    (("10.0.1.128/25", "10.0.1.5"), "static_route.cidr"),  # overlaps the tier
    (("127.0.0.0/8", "10.0.1.5"), "static_route.cidr"),
    (("203.0.113.128/25", "10.0.1.5"), "static_route.cidr"),  # the zone's public network
]


@pytest.mark.parametrize(("args", "field"), BAD_ROUTES)
def test_bad_route_is_invalid_argument_naming_the_field(vpc2, args, field):
    cloud, api, vpc, _web = vpc2
    err = rpc_error(lambda: route(api, vpc.id, *args))
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in bad_fields(err)
    assert count(cloud, "vpc_static_routes") == 0


BAD_GATEWAYS = [
    # A named VLAN (only the admin may name one).
    (dict(vlan_id=5000), "private_gateway.vlan_id"),
    (dict(vlan_id=150), "private_gateway.vlan_id"),  # the zone's tenant range
    (dict(vlan_id=4000), "private_gateway.vlan_id"),  # the provider segment
    (dict(vlan_id=4001), "private_gateway.vlan_id"),  # the router-VM control network
    (dict(address="192.168.50.2"), "private_gateway.address"),
    (dict(address="192.168.50.0/24"), "private_gateway.address"),
    (dict(address="10.0.1.9/24", gateway="10.0.1.1"), "private_gateway.address"),  # the tier
    (dict(address="203.0.113.9/24", gateway="203.0.113.1"), "private_gateway.address"),
    (dict(gateway="192.168.51.1"), "private_gateway.gateway"),
    (dict(gateway="192.168.50.2"), "private_gateway.gateway"),
    (dict(acl_id="bad"), "private_gateway.acl_id"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_GATEWAYS)
def test_bad_private_gateway_is_invalid_argument_naming_the_field(vpc2, fields, field):
    cloud, api, vpc, _web = vpc2
    macs = count(cloud, "mac_addresses")
    caller = as_admin(cloud, api) if "vlan_id" in fields else api
    err = rpc_error(lambda: gateway(caller, vpc.id, **fields))
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in bad_fields(err)
    assert count(cloud, "vpc_private_gateways") == 0
    assert count(cloud, "mac_addresses") == macs


def test_routes_and_a_private_gateway_in_the_router_config(vpc2):
    cloud, api, vpc, web = vpc2
    pg = gateway(api, vpc.id, acl_id=DEFAULT_DENY_ID)
    r1 = route(api, vpc.id, "172.16.0.0/12", "10.0.1.50")
    r2 = route(api, vpc.id, "10.200.0.0/16", "192.168.50.1")
    assert (r1.via_id, r2.via_id) == (web.id, pg.id)
    err = rpc_error(lambda: route(api, vpc.id, "172.16.0.0/12", "10.0.1.51"))
    assert err.code() == Code.ALREADY_EXISTS
    err = rpc_error(lambda: gateway(as_admin(cloud, api), vpc.id, vlan_id=2000,
                                    address="192.168.60.2/24", gateway="192.168.60.1"))
    assert err.code() == Code.ALREADY_EXISTS  # VLAN 2000 is taken
    cfg = build_router_config(cloud.store.router_snapshot(vpc.router_id))
    pgi = next(i for i in cfg.interfaces if i.role == apb.INTERFACE_ROLE_PRIVATE_GATEWAY)
    assert list(pgi.addresses) == ["192.168.50.2/24"]
    assert pgi.segment_id == 2000
    assert pgi.mac not in {i.mac for i in cfg.interfaces if i is not pgi}
    routes = {(r.destination, r.gateway, r.interface) for r in cfg.routes}
    assert ("10.200.0.0/16", "192.168.50.1", pgi.name) in routes
    assert any(r[0] == "172.16.0.0/12" and r[1] == "10.0.1.50" for r in routes)
    assert (pg.id, DEFAULT_DENY_ID) in {(t.network_id, t.acl_id) for t in cfg.tier_acls}
    assert not any(n.network_id == pg.id for n in cfg.guest_networks)  # no DHCP there
    # What routes use cannot go first.
    err = rpc_error(lambda: api.DeletePrivateGateway(vpb.DeletePrivateGatewayRequest(id=pg.id)))
    assert err.code() == Code.FAILED_PRECONDITION
    err = rpc_error(lambda: api.DeleteNetwork(pb.DeleteNetworkRequest(id=web.id)))
    assert err.code() == Code.FAILED_PRECONDITION
    for r in (r1, r2):
        api.DeleteStaticRoute(vpb.DeleteStaticRouteRequest(id=r.id))
    api.DeletePrivateGateway(vpb.DeletePrivateGatewayRequest(id=pg.id))
    assert count(cloud, "vpc_private_gateways") == 0


def test_a_vpc_holds_at_most_14_tiers_and_private_gateways_together(vpc2):
    # 16 NICs per router VM, less control and public: the same cap on either
    # backend. Here: web + 12 more tiers + one gateway = 14.
    cloud, api, vpc, _ = vpc2
    for i in range(2, 14):
        api.tier(vpc.id, f"t{i}", f"10.0.{i}.0/24")
    gateway(api, vpc.id)
    before = {t: count(cloud, t) for t in ("networks", "vpc_private_gateways", "mac_addresses")}

    err = rpc_error(lambda: api.tier(vpc.id, "one-more", "10.0.99.0/24"))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert err.details().startswith("network.vpc_id:")
    assert "14" in err.details()
    err = rpc_error(lambda: gateway(api, vpc.id, address="192.168.51.2/24",
                                    gateway="192.168.51.1"))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert err.details().startswith("private_gateway.vpc_id:")
    assert {t: count(cloud, t) for t in before} == before
