"""IPv6 peer CIDRs of a site-to-site VPN through the API: validated per
family, accepted on a dual-stack network or VPC (whose /64s then join the
connection's local traffic selectors), refused naming the field where the
gateway's side has no IPv6, with nothing created."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import routing_pb2 as rpb
from cloudnet.netmgr.v1 import vpn_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vrpc

from netmgr.reconcile.configbuild.router import build_router_config
from netmgr.store.base import DEFAULT_ZONE
from router.services import strongswan
from tests.lib.netmgr_cloud import Api, Cloud, VpcApi, bad_fields, rpc_error

ZONE6 = dataclasses.replace(DEFAULT_ZONE, ipv6_pool="2001:db8:100::/48")
PEER6 = "2001:db8:1601::/64"
TABLES = ("vpn_gateways", "customer_gateways", "vpn_connections")


class Vpn:
    def __init__(self, c: Cloud, api: Api) -> None:
        self.stub, self.md = vrpc.VpnServiceStub(c.channel), api.metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.stub, name)
        return lambda req: method(req, metadata=self.md, timeout=30)


def counts(c: Cloud) -> dict[str, int]:
    return {t: c.sql(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def cgw(**kw: Any) -> vpb.CreateCustomerGatewayRequest:
    f: dict[str, Any] = dict(name="site-a", peer_address="192.0.2.2",
                             peer_cidrs=["172.16.1.0/24"], psk="0123456789abcdef-Key",
                             ike_version=vpb.IKE_VERSION_2)
    f.update(kw)
    return vpb.CreateCustomerGatewayRequest(customer_gateway=vpb.CustomerGateway(**f))


@pytest.fixture
def world(make_cloud: Callable[..., Cloud]) -> tuple[Cloud, Api, Vpn]:
    cloud = make_cloud(ZONE6)
    _, api = cloud.new_tenant("acme")
    return cloud, api, Vpn(cloud, api)


def _connect(v: Vpn, gw_id: str, cgw_id: str) -> vpb.VpnConnection:
    return v.CreateVpnConnection(vpb.CreateVpnConnectionRequest(vpn_connection=vpb.VpnConnection(
        vpn_gateway_id=gw_id, customer_gateway_id=cgw_id)))


def test_ipv6_peer_cidrs_are_validated_per_family(world: Any) -> None:
    cloud, _, v = world
    before = counts(cloud)
    invalid = [
        ("fe80::/64", "link-local"),
        ("ff05::/16", "multicast"),
        ("::/0", "/16"),
        ("2000::/3", "/16"),
        ("2001:db8:1601::1/64", "host bits"),
        ("::1/128", "reserved"),
        ("::ffff:10.0.0.0/104", "IPv4-mapped"),
        ("2001:db8:1601::/129", "not"),
    ]
    for value, reason in invalid:
        err = rpc_error(lambda x=value: v.CreateCustomerGateway(
            cgw(peer_cidrs=["172.16.1.0/24", x])))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, value
        assert bad_fields(err) == ["customer_gateway.peer_cidrs[1]"], (value, err.details())
        assert reason in err.details(), (value, err.details())
    err = rpc_error(lambda: v.CreateCustomerGateway(
        cgw(peer_cidrs=["2001:db8::/32", PEER6])))
    assert bad_fields(err) == ["customer_gateway.peer_cidrs"]
    assert "overlaps" in err.details()
    assert counts(cloud) == before
    # Both families together, canonical.
    c = v.CreateCustomerGateway(cgw(peer_cidrs=["172.16.1.0/24", "2001:DB8:1601:0::/64"]))
    assert list(c.peer_cidrs) == ["172.16.1.0/24", PEER6]


def test_a_network_without_ipv6_refuses_ipv6_peer_cidrs(world: Any) -> None:
    cloud, api, v = world
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="a",
                                                                        cidr="10.1.0.0/24")))
    gw = v.CreateVpnGateway(vpb.CreateVpnGatewayRequest(
        vpn_gateway=vpb.VpnGateway(network_id=net.id)))
    c = v.CreateCustomerGateway(cgw(peer_cidrs=["172.16.1.0/24", PEER6]))
    before = counts(cloud)
    err = rpc_error(lambda: _connect(v, gw.id, c.id))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err) == ["vpn_connection.customer_gateway_id"]
    assert PEER6 in err.details()
    assert "no IPv6" in err.details()
    assert counts(cloud) == before


def test_a_dual_stack_network_carries_its_64_in_the_selectors(world: Any) -> None:
    cloud, api, v = world
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="a", cidr="10.1.0.0/24", ipv6_mode=rpb.IPV6_MODE_SLAAC)))
    assert net.ipv6_cidr == "2001:db8:100::/64"
    gw = v.CreateVpnGateway(vpb.CreateVpnGatewayRequest(
        vpn_gateway=vpb.VpnGateway(network_id=net.id)))
    # A peer CIDR overlapping the network's /64 is refused.
    bad = v.CreateCustomerGateway(cgw(name="bad", peer_cidrs=["2001:db8:100::/56"]))
    err = rpc_error(lambda: _connect(v, gw.id, bad.id))
    assert bad_fields(err) == ["vpn_connection.customer_gateway_id"]
    assert "2001:db8:100::/56" in err.details()
    # IPv4 only: the /64 stays out of the selectors.
    v4 = v.CreateCustomerGateway(cgw(name="v4", peer_address="192.0.2.3"))
    _connect(v, gw.id, v4.id)
    c = v.CreateCustomerGateway(cgw(peer_cidrs=["172.16.9.0/24", PEER6]))
    conn = _connect(v, gw.id, c.id)
    cfg = build_router_config(cloud.store.router_snapshot(net.router_id))
    by_id = {rc.id: rc for rc in cfg.vpn_connections}
    assert list(by_id[conn.id].local_cidrs) == ["10.1.0.0/24", "2001:db8:100::/64"]
    assert list(by_id[conn.id].peer_cidrs) == ["172.16.9.0/24", PEER6]
    assert [rc.local_cidrs for i, rc in by_id.items() if i != conn.id] == [["10.1.0.0/24"]]
    strongswan.verify(cfg)  # what the API accepts, the router accepts


def test_a_vpc_carries_its_tiers_64s(world: Any) -> None:
    cloud, api, v = world
    vpc_api = VpcApi(cloud, api)
    vpc = vpc_api.vpc(cidr="10.8.0.0/16")
    vpc_api.tier(vpc.id, "web", "10.8.1.0/24", ipv6_mode=rpb.IPV6_MODE_SLAAC)
    vpc_api.tier(vpc.id, "db", "10.8.2.0/24")  # IPv4 only
    vpc_api.tier(vpc.id, "app", "10.8.3.0/24", ipv6_mode=rpb.IPV6_MODE_DHCPV6_STATELESS)
    gw = v.CreateVpnGateway(vpb.CreateVpnGatewayRequest(vpn_gateway=vpb.VpnGateway(
        vpc_id=vpc.id)))
    c = v.CreateCustomerGateway(cgw(peer_cidrs=[PEER6]))
    _connect(v, gw.id, c.id)
    [rc] = build_router_config(cloud.store.router_snapshot(vpc.router_id)).vpn_connections
    assert list(rc.local_cidrs) == ["10.8.0.0/16", "2001:db8:100::/64", "2001:db8:100:1::/64"]
    assert list(rc.peer_cidrs) == [PEER6]
