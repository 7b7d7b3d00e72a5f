"""``debug explain`` for routed traffic: IPv6 from a dual-stack network's
/64 and routed IPv4 networks leave unNATed; from outside, such a guest is
reached only through an ingress firewall rule naming its network (the rule
named), else the router's default drop. Model only."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import debug_pb2, debug_pb2_grpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import routing_pb2 as rpb

from netmgr.model.core import BgpPeer
from netmgr.store.base import DEFAULT_ZONE
from tests.lib.netmgr_cloud import Cloud, bad_fields, rpc_error
from tests.lib.netmgr_edge import Edge

ZONE6 = dataclasses.replace(
    DEFAULT_ZONE, ipv6_pool="2001:db8:100::/48", routed_pool="198.18.0.0/16",
    public_cidr6="2001:db8:ffff::/64", public_gateway6="2001:db8:ffff::1", bgp_asn=64512,
    bgp_peers=(BgpPeer("2001:db8:ffff::1", 64496),))


@dataclasses.dataclass
class World:
    explain: Callable[[str, str], debug_pb2.ExplainResponse]
    ids: dict[str, str]


@pytest.fixture
def world(make_cloud: Callable[..., Cloud]) -> World:
    """A routed dual-stack network (pub: a guest g), a plain IPv4 network
    (nat), ingress rules: HTTPS to pub from 2001:db8:beef::/48, SSH to pub
    from 198.51.100.0/24."""
    cloud = make_cloud(ZONE6)
    _, api = cloud.new_tenant("acme")
    pub = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="pub", cidr="", routed=True, ipv6_mode=rpb.IPV6_MODE_DHCPV6_STATEFUL)))
    nat = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="nat", cidr="10.7.0.0/24")))
    g = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=pub.id)))
    n = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=nat.id)))
    edge = Edge(cloud, api)

    def rule(**fields: Any) -> epb.FirewallRule:
        return edge.CreateFirewallRule(epb.CreateFirewallRuleRequest(
            firewall_rule=epb.FirewallRule(direction=epb.FIREWALL_DIRECTION_INGRESS,
                                           network_id=pub.id, **fields)))

    https6 = rule(protocol="tcp", port=443, cidrs=["2001:db8:beef::/48"])
    ssh4 = rule(protocol="tcp", port=22, cidrs=["198.51.100.0/24"])
    stub = debug_pb2_grpc.DebugServiceStub(cloud.channel)

    def explain(src: str, to: str) -> debug_pb2.ExplainResponse:
        return stub.Explain(debug_pb2.ExplainRequest(**{"from": src, "to": to}),
                            metadata=api.metadata, timeout=10)
    return World(explain, {"pub": pub.id, "nat": nat.id, "g": g.id, "n": n.id, "g6": g.ipv6,
                           "g4": g.ip, "https6": https6.id, "ssh4": ssh4.id})


# (from, to, allowed, decided by (kind, id key or literal), a step that must be there)
CASES = [
    # A guest's IPv6 to the internet: routed from its own address, no egress rule.
    ("g", "[2001:db8:5100::10]:80/tcp", True, ("network", "pub"), "no NAT"),
    # From the internet over IPv6: only what an ingress rule of the network opens.
    ("2001:db8:beef::7", "[g6]:443/tcp", True, ("firewall", "https6"), "routed: no NAT"),
    ("2001:db8:beef::7", "[g6]:22/tcp", False, ("firewall-default", "drop"), ""),
    ("2001:db8:dead::7", "[g6]:443/tcp", False, ("firewall-default", "drop"), ""),
    ("internet", "g6/icmp", False, ("firewall-default", "drop"), ""),
    # An IPv4 rule opens nothing over IPv6, and the reverse.
    ("2001:db8:beef::7", "[g6]:22/tcp", False, ("firewall-default", "drop"), ""),
    ("198.51.100.7", "g4:443/tcp", False, ("firewall-default", "drop"), ""),
    # Routed IPv4 from the internet to the guest's own address.
    ("198.51.100.7", "g4:22/tcp", True, ("firewall", "ssh4"), "routed: no NAT"),
    ("203.0.113.99", "g4:22/tcp", False, ("firewall-default", "drop"), ""),
]


def _resolve(w: World, text: str) -> str:
    for key in ("g6", "g4"):
        text = text.replace(key, w.ids[key])
    return w.ids["g"] if text == "g" else text


@pytest.mark.parametrize(("src", "to", "allowed", "by", "step"), CASES)
def test_routed_and_ipv6_flows(world: World, src: str, to: str, allowed: bool,
                               by: tuple[str, str], step: str) -> None:
    r = world.explain(_resolve(world, src), _resolve(world, to))
    assert (r.allowed, r.decided_by_kind, r.decided_by_id) == (
        allowed, by[0], world.ids.get(by[1], by[1])), r
    assert r.router_id
    if step:
        assert any(step in s.result for s in r.steps), r


def test_a_routed_guest_leaves_by_its_own_address_a_plain_one_by_source_nat(
        world: World) -> None:
    routed = world.explain(world.ids["g"], "198.51.100.10:80/tcp")
    assert routed.allowed
    assert any("no source NAT" in s.result and world.ids["g4"] in s.result
               for s in routed.steps), routed
    assert not any(s.object_kind == "snat" for s in routed.steps)
    natted = world.explain(world.ids["n"], "198.51.100.10:80/tcp")
    assert ("snat", world.ids["nat"]) in [(s.object_kind, s.object_id) for s in natted.steps]


def test_an_ipv6_flow_from_a_port_without_ipv6_or_of_mixed_families_is_refused(
        world: World) -> None:
    for src, to, field in (("2001:db8:beef::7", "198.51.100.7:80/tcp", "to"),
                           ("198.51.100.7", "[2001:db8:beef::7]:80/tcp", "from"),
                           ("internet", "[nope]:80/tcp", "to")):
        err = rpc_error(lambda s=src, t=to: world.explain(s, t))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(err) == [field], (src, to)
