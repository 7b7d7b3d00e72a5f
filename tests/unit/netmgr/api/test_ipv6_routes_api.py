"""IPv6 VPC static routes through the API: a route of either family through
a tier's subnet of that family, refused naming the field when the families
differ or the next hop is not on a tier's /64, and the router config they
give (the ipv6 service's routes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import routing_pb2 as rpb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from netmgr.model.core import BgpPeer
from netmgr.reconcile.configbuild.router import build_router_config
from netmgr.store.base import DEFAULT_ZONE
from tests.lib.netmgr_cloud import Cloud, VpcApi, bad_fields, rpc_error

Code = grpc.StatusCode
ZONE6 = dataclasses.replace(
    DEFAULT_ZONE, ipv6_pool="2001:db8:100::/48", public_cidr6="2001:db8:ffff::/64",
    public_gateway6="2001:db8:ffff::1", bgp_asn=64512,
    bgp_peers=(BgpPeer("2001:db8:ffff::1", 64496),))
STATELESS = rpb.IPV6_MODE_DHCPV6_STATELESS


@pytest.fixture
def vpc6(make_cloud: Callable[..., Cloud]) -> tuple[Cloud, VpcApi, vpb.Vpc, pb.Network]:
    cloud = make_cloud(ZONE6)
    _, api = cloud.new_tenant("acme")
    vpc_api = VpcApi(cloud, api)
    vpc = vpc_api.vpc("v", "10.0.0.0/16")
    web = vpc_api.tier(vpc.id, "web", "10.0.1.0/24", ipv6_mode=STATELESS)
    assert web.ipv6_cidr == "2001:db8:100::/64"
    return cloud, vpc_api, vpc, web


def route(api: VpcApi, vpc_id: str, cidr: str, next_hop: str) -> vpb.StaticRoute:
    return api.CreateStaticRoute(vpb.CreateStaticRouteRequest(
        static_route=vpb.StaticRoute(vpc_id=vpc_id, cidr=cidr, next_hop=next_hop)))


def test_an_ipv6_route_goes_through_the_tier_holding_its_next_hop(vpc6) -> None:
    cloud, api, vpc, web = vpc6
    r6 = route(api, vpc.id, "2001:db8:99::/48", "2001:db8:100::5")
    r4 = route(api, vpc.id, "172.16.0.0/12", "10.0.1.5")
    assert (r6.cidr, r6.next_hop, r6.via_id) == ("2001:db8:99::/48", "2001:db8:100::5", web.id)
    assert r4.via_id == web.id
    snap = cloud.store.router_snapshot(web.router_id)
    cfg = build_router_config(snap)
    assert [(r.destination, r.gateway) for r in cfg.ipv6_routes] == [
        ("2001:db8:99::/48", "2001:db8:100::5")]
    assert cfg.ipv6_routes[0].interface == next(
        n.interface for n in cfg.guest_networks if n.network_id == web.id)
    assert "2001:db8:99::/48" not in [r.destination for r in cfg.routes]
    assert "172.16.0.0/12" in [r.destination for r in cfg.routes]
    # The tier cannot go while a route of either family goes through it.
    err = rpc_error(lambda: api.DeleteNetwork(pb.DeleteNetworkRequest(id=web.id)))
    assert err.code() == Code.FAILED_PRECONDITION


BAD_ROUTES6 = [
    (("2001:db8:99::/48", "10.0.1.5"), "static_route.next_hop"),  # v4 hop, v6 destination
    (("172.16.0.0/12", "2001:db8:100::5"), "static_route.cidr"),  # v6 hop, v4 destination
    (("2001:db8:99::/48", "2001:db8:777::5"), "static_route.next_hop"),  # on no tier
    (("2001:db8:99::/48", "2001:db8:100::1"), "static_route.next_hop"),  # the router's
    (("2001:db8:99::/48", "fe80::5"), "static_route.next_hop"),  # link-local
    (("::/0", "2001:db8:100::5"), "static_route.cidr"),  # the default route
    (("2001:db8:99::1/48", "2001:db8:100::5"), "static_route.cidr"),  # host bits
    (("ff00::/8", "2001:db8:100::5"), "static_route.cidr"),  # multicast
    (("2001:db8:100::/80", "2001:db8:100::5"), "static_route.cidr"),  # inside the tier
    (("2001:db8:ffff::/64", "2001:db8:100::5"), "static_route.cidr"),  # the public /64
]


@pytest.mark.parametrize(("args", "field"), BAD_ROUTES6)
def test_a_bad_ipv6_route_is_refused_naming_the_field(vpc6, args, field) -> None:
    cloud, api, vpc, _web = vpc6
    before = cloud.row_counts()
    err = rpc_error(lambda: route(api, vpc.id, *args))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == [field]
    assert cloud.row_counts() == before
