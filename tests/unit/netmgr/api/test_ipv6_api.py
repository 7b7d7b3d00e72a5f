"""IPv6 dual stack, routed networks and BGP settings through the API: what is
allocated, and bad input refused naming the field with nothing created."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import routing_pb2 as rpb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from google.protobuf.field_mask_pb2 import FieldMask

from netmgr.model.core import BgpPeer
from netmgr.store.base import DEFAULT_ZONE
from tests.lib.netmgr_cloud import Api, Cloud, VpcApi, bad_fields, rpc_error
from tests.lib.netmgr_edge import Edge, counts

Code = grpc.StatusCode
ZONE6 = dataclasses.replace(
    DEFAULT_ZONE, ipv6_pool="2001:db8:100::/48", routed_pool="198.18.0.0/16",
    public_cidr6="2001:db8:ffff::/64", public_gateway6="2001:db8:ffff::1", bgp_asn=64512,
    bgp_peers=(BgpPeer("203.0.113.1", 64496), BgpPeer("2001:db8:ffff::1", 64496)))
SLAAC, STATELESS, STATEFUL = (rpb.IPV6_MODE_SLAAC, rpb.IPV6_MODE_DHCPV6_STATELESS,
                              rpb.IPV6_MODE_DHCPV6_STATEFUL)


@pytest.fixture
def world(make_cloud: Callable[..., Cloud]) -> tuple[Cloud, Api]:
    cloud = make_cloud(ZONE6)
    _, api = cloud.new_tenant("acme")
    return cloud, api


def net(api: Api, **kw: Any) -> pb.Network:
    fields = {"name": "web", "cidr": "10.0.0.0/24", **kw}
    return api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(**fields)))


def port(api: Api, network_id: str, **kw: Any) -> pb.Port:
    return api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=network_id, **kw)))


def test_a_network_gets_the_lowest_free_64_of_the_pool_and_its_gateway(world) -> None:
    _, api = world
    a = net(api, ipv6_mode=SLAAC)
    b = net(api, name="db", cidr="10.0.1.0/24", ipv6_mode=STATEFUL)
    assert (a.ipv6_cidr, a.ipv6_gateway) == ("2001:db8:100::/64", "2001:db8:100::1")
    assert b.ipv6_cidr == "2001:db8:100:1::/64"
    assert (a.ipv6_mode, b.ipv6_mode) == (SLAAC, STATEFUL)
    assert api.GetNetwork(pb.GetNetworkRequest(id=b.id)).ipv6_cidr == b.ipv6_cidr


def test_a_given_64_defaults_to_slaac_and_a_plain_network_has_no_ipv6(world) -> None:
    _, api = world
    given = net(api, ipv6_cidr="2001:DB8:5::/64")
    plain = net(api, name="db", cidr="10.0.1.0/24")
    assert (given.ipv6_cidr, given.ipv6_mode) == ("2001:db8:5::/64", SLAAC)
    assert (plain.ipv6_cidr, plain.ipv6_mode, plain.ipv6_gateway) == ("", 0, "")


def test_ports_get_eui64_in_slaac_and_allocated_addresses_when_stateful(world) -> None:
    _, api = world
    slaac = net(api, ipv6_mode=SLAAC)
    stateful = net(api, name="db", cidr="10.0.1.0/24", ipv6_mode=STATEFUL)
    p = port(api, slaac.id, mac="52:54:00:12:34:56")
    assert p.ipv6 == "2001:db8:100:0:5054:ff:fe12:3456"
    first, second = port(api, stateful.id), port(api, stateful.id)
    assert (first.ipv6, second.ipv6) == ("2001:db8:100:1::100", "2001:db8:100:1::101")
    asked = port(api, stateful.id, ipv6="2001:db8:100:1::abc")
    assert asked.ipv6 == "2001:db8:100:1::abc"
    err = rpc_error(lambda: port(api, stateful.id, ipv6="2001:db8:100:1::abc"))
    assert err.code() == Code.ALREADY_EXISTS
    assert "port.ipv6" in err.details()


def test_a_routed_network_takes_a_24_of_the_routed_pool(world) -> None:
    _, api = world
    a = net(api, cidr="", routed=True)
    b = net(api, name="db", cidr="", routed=True)
    given = net(api, name="app", cidr="198.18.9.0/26", routed=True)
    assert (a.cidr, a.gateway, a.routed) == ("198.18.0.0/24", "198.18.0.1", True)
    assert b.cidr == "198.18.1.0/24"
    assert given.cidr == "198.18.9.0/26"
    # Routed CIDRs are public: another tenant cannot take an overlapping one.
    cloud, _ = world
    _, other = cloud.new_tenant("other")
    err = rpc_error(lambda: net(other, cidr="198.18.0.0/25", routed=True))
    assert err.code() == Code.ALREADY_EXISTS


def test_a_given_64_is_unique_in_the_zone(world) -> None:
    cloud, api = world
    net(api, ipv6_cidr="2001:db8:5::/64")
    _, other = cloud.new_tenant("other")
    err = rpc_error(lambda: net(other, ipv6_cidr="2001:db8:5::/64"))
    assert err.code() == Code.ALREADY_EXISTS
    assert "network.ipv6_cidr" in err.details()


BAD_NETWORKS = [
    (dict(ipv6_cidr="2001:db8:5::/56"), "network.ipv6_cidr"),  # wrong prefix length
    (dict(ipv6_cidr="2001:db8:5::/80"), "network.ipv6_cidr"),
    (dict(ipv6_cidr="fe80::/64"), "network.ipv6_cidr"),  # link-local
    (dict(ipv6_cidr="ff05::/64"), "network.ipv6_cidr"),  # multicast
    (dict(ipv6_cidr="10.9.0.0/24"), "network.ipv6_cidr"),  # IPv4 where IPv6 belongs
    (dict(ipv6_cidr="2001:db8:5::1/64"), "network.ipv6_cidr"),  # host bits
    (dict(ipv6_cidr="2001:db8:5::/64\nx"), "network.ipv6_cidr"),
    (dict(ipv6_cidr="2001:db8:ffff::/64"), "network.ipv6_cidr"),  # the provider's /64
    (dict(ipv6_mode=9), "network.ipv6_mode"),  # no such mode
    (dict(cidr="2001:db8:7::/64"), "network.cidr"),  # IPv6 where IPv4 belongs
    (dict(cidr="10.9.0.0/24", routed=True), "network.cidr"),  # outside the routed pool
    (dict(cidr="198.18.0.0/12", routed=True), "network.cidr"),  # covers more than the pool
]


@pytest.mark.parametrize(("fields", "field"), BAD_NETWORKS)
def test_bad_ipv6_or_routed_network_is_refused_naming_the_field(
        world, fields: dict[str, Any], field: str) -> None:
    cloud, api = world
    before = cloud.row_counts()
    err = rpc_error(lambda: net(api, **fields))
    assert err.code() == Code.INVALID_ARGUMENT, err.details()
    assert field in bad_fields(err)
    assert "\n" not in err.details()
    assert cloud.row_counts() == before


def test_a_vpc_tier_takes_ipv6_but_is_not_routed(world) -> None:
    cloud, api = world
    vpc_api = VpcApi(cloud, api)
    vpc = vpc_api.vpc()
    tier = vpc_api.tier(vpc.id, "web", "10.0.1.0/24", ipv6_mode=STATELESS)
    assert tier.ipv6_cidr == "2001:db8:100::/64"
    before = cloud.row_counts()
    err = rpc_error(lambda: vpc_api.tier(vpc.id, "db", "10.0.2.0/24", routed=True))
    assert bad_fields(err) == ["network.routed"]
    assert cloud.row_counts() == before
    assert isinstance(vpc, vpb.Vpc)


BAD_PORTS = [
    # A SLAAC guest forms its own address: a given one is a mode mismatch.
    ("slaac", dict(ipv6="2001:db8:100::99"), "port.ipv6"),
    ("stateful", dict(ipv6="fe80::1"), "port.ipv6"),  # link-local
    ("stateful", dict(ipv6="ff02::1"), "port.ipv6"),  # multicast
    ("stateful", dict(ipv6="10.0.1.9"), "port.ipv6"),  # wrong family
    ("stateful", dict(ipv6="2001:db8:999::9"), "port.ipv6"),  # outside the /64
    ("stateful", dict(ipv6="2001:db8:100:1::1"), "port.ipv6"),  # the router's
    ("plain", dict(ipv6="2001:db8:100::9"), "port.ipv6"),  # no IPv6 on the network
]


@pytest.mark.parametrize(("kind", "fields", "field"), BAD_PORTS)
def test_bad_port_ipv6_is_refused_naming_the_field(
        world, kind: str, fields: dict[str, Any], field: str) -> None:
    cloud, api = world
    nets = {"slaac": net(api, ipv6_mode=SLAAC),
            "stateful": net(api, name="db", cidr="10.0.1.0/24", ipv6_mode=STATEFUL),
            "plain": net(api, name="app", cidr="10.0.2.0/24")}
    before = cloud.row_counts()
    err = rpc_error(lambda: port(api, nets[kind].id, **fields))
    assert err.code() == Code.INVALID_ARGUMENT, err.details()
    assert field in bad_fields(err)
    assert cloud.row_counts() == before


def test_the_zone_shows_and_takes_its_routing_settings(world) -> None:
    cloud, _ = world
    zone = cloud.admin.GetZone(pb.GetZoneRequest())
    assert (zone.ipv6_pool, zone.routed_pool, zone.bgp_asn) == (
        "2001:db8:100::/48", "198.18.0.0/16", 64512)
    assert [(p.address, p.asn) for p in zone.bgp_peers] == [
        ("203.0.113.1", 64496), ("2001:db8:ffff::1", 64496)]
    changed = cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(bgp_asn=4200000000, bgp_peers=[rpb.BgpPeer(address="203.0.113.2",
                                                                asn=65000)]),
        update_mask=FieldMask(paths=["bgp_asn", "bgp_peers"])))
    assert changed.bgp_asn == 4200000000
    assert [p.address for p in changed.bgp_peers] == ["203.0.113.2"]


def _peer(address: str, asn: int = 64496) -> rpb.BgpPeer:
    return rpb.BgpPeer(address=address, asn=asn)


BAD_ZONES = [
    (dict(ipv6_pool="2001:db8::/64"), "zone.ipv6_pool"),  # no room for /64s
    (dict(ipv6_pool="2001:db8::/8"), "zone.ipv6_pool"),
    (dict(ipv6_pool="fe80::/48"), "zone.ipv6_pool"),  # link-local
    (dict(ipv6_pool="10.0.0.0/16"), "zone.ipv6_pool"),  # wrong family
    (dict(routed_pool="2001:db8::/48"), "zone.routed_pool"),  # wrong family
    (dict(routed_pool="198.18.0.0/30"), "zone.routed_pool"),
    (dict(public_cidr6="2001:db8:ffff::/48"), "zone.public_cidr6"),
    (dict(public_gateway6="2001:db8:eeee::1"), "zone.public_gateway6"),  # not in the /64
    (dict(public_gateway6="fe80::1"), "zone.public_gateway6"),  # link-local
    (dict(public_gateway6="203.0.113.1"), "zone.public_gateway6"),  # wrong family
    (dict(bgp_asn=4294967295), "zone.bgp_asn"),  # reserved ASN
    (dict(bgp_peers=[_peer("203.0.113.1", 0)]), "zone.bgp_peers[0].asn"),
    (dict(bgp_peers=[_peer("ff02::2")]), "zone.bgp_peers[0].address"),  # multicast
    (dict(bgp_peers=[_peer("fe80::1")]), "zone.bgp_peers[0].address"),  # link-local
    (dict(bgp_peers=[_peer("198.51.100.1")]), "zone.bgp_peers[0].address"),  # off-link
    (dict(bgp_peers=[_peer("2001:db8:1::1")]), "zone.bgp_peers[0].address"),  # off-link v6
    (dict(bgp_peers=[_peer("router\n1")]), "zone.bgp_peers[0].address"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_ZONES)
def test_bad_zone_routing_settings_are_refused_naming_the_field(
        world, fields: dict[str, Any], field: str) -> None:
    cloud, _ = world
    before = cloud.admin.GetZone(pb.GetZoneRequest())
    err = rpc_error(lambda: cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(**fields), update_mask=FieldMask(paths=list(fields)))))
    assert err.code() == Code.INVALID_ARGUMENT, err.details()
    assert field in bad_fields(err)
    assert cloud.admin.GetZone(pb.GetZoneRequest()) == before


def test_an_ipv6_peer_needs_the_providers_ipv6(make_cloud) -> None:
    cloud = make_cloud(DEFAULT_ZONE)
    err = rpc_error(lambda: cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(bgp_asn=64512, bgp_peers=[_peer("2001:db8:ffff::1")]),
        update_mask=FieldMask(paths=["bgp_asn", "bgp_peers"]))))
    assert bad_fields(err) == ["zone.bgp_peers[0].address"]


def test_the_routed_pool_cannot_shrink_away_from_a_routed_network(world) -> None:
    cloud, api = world
    net(api, cidr="", routed=True)
    err = rpc_error(lambda: cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(routed_pool="198.19.0.0/16"), update_mask=FieldMask(paths=["routed_pool"]))))
    assert err.code() == Code.FAILED_PRECONDITION
    assert ipaddress.IPv4Network(cloud.admin.GetZone(pb.GetZoneRequest()).routed_pool) == \
        ipaddress.IPv4Network("198.18.0.0/16")


def test_an_ipv4_rule_names_an_ipv6_source_as_the_wrong_family(world) -> None:
    cloud, api = world
    web = net(api)
    edge = Edge(cloud, api)
    before = counts(cloud)
    err = rpc_error(lambda: edge.CreateFirewallRule(epb.CreateFirewallRuleRequest(
        firewall_rule=epb.FirewallRule(direction=epb.FIREWALL_DIRECTION_EGRESS,
                                       network_id=web.id, protocol="tcp", port=80,
                                       cidrs=["2001:db8::/32"]))))
    assert bad_fields(err) == ["firewall_rule.cidrs[0]"]
    assert "IPv6" in err.details()
    assert counts(cloud) == before


def test_a_guest_ingress_rule_takes_the_families_its_network_is_reached_by(world) -> None:
    cloud, api = world
    v6only = net(api, ipv6_mode=SLAAC)
    routed = net(api, name="pub", cidr="", routed=True)
    plain = net(api, name="plain", cidr="10.0.9.0/24")
    edge = Edge(cloud, api)

    def create(network_id: str, cidrs: list[str]) -> epb.FirewallRule:
        return edge.CreateFirewallRule(epb.CreateFirewallRuleRequest(
            firewall_rule=epb.FirewallRule(direction=epb.FIREWALL_DIRECTION_INGRESS,
                                           network_id=network_id, protocol="tcp", port=443,
                                           cidrs=cidrs)))

    ok = create(v6only.id, ["2001:db8:beef::/48"])
    assert (ok.network_id, ok.public_ip_id, list(ok.cidrs)) == (
        v6only.id, "", ["2001:db8:beef::/48"])
    assert create(routed.id, ["198.51.100.0/24"]).network_id == routed.id
    before = counts(cloud)
    for network_id, cidrs, field in (
            (v6only.id, ["198.51.100.0/24"], "firewall_rule.cidrs[0]"),
            (routed.id, ["2001:db8::/32"], "firewall_rule.cidrs[0]"),
            (plain.id, [], "firewall_rule.network_id")):
        err = rpc_error(lambda n=network_id, c=cidrs: create(n, c))
        assert bad_fields(err) == [field]
    assert counts(cloud) == before
    # An update is held to the same.
    err = rpc_error(lambda: edge.UpdateFirewallRule(epb.UpdateFirewallRuleRequest(
        firewall_rule=epb.FirewallRule(id=ok.id, cidrs=["198.51.100.0/24"]),
        update_mask=FieldMask(paths=["cidrs"]))))
    assert bad_fields(err) == ["firewall_rule.cidrs[0]"]
