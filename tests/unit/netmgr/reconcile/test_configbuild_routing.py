"""The config builder's IPv6, routed and BGP parts (pure)."""

from __future__ import annotations

import dataclasses

from netmgr.model.core import BgpPeer, Ipv6Mode
from netmgr.reconcile.configbuild.router import build_router_config
from tests.lib.router_snapshots import NET, ZONE, port, snapshot

ZONE6 = dataclasses.replace(ZONE, public_cidr6="2001:db8:ffff::/64",
                            public_gateway6="2001:db8:ffff::1", bgp_asn=64512,
                            bgp_peers=(BgpPeer("203.0.113.1", 64496),
                                       BgpPeer("2001:db8:ffff::1", 64496)))
DUAL = dataclasses.replace(NET, ipv6_cidr="2001:db8:10::/64", ipv6_gateway="2001:db8:10::1",
                           ipv6_mode=Ipv6Mode.DHCPV6_STATEFUL)


def build(net=NET, zone=ZONE6, *ports):
    snap = dataclasses.replace(snapshot(*ports), networks=(net,), zone=zone)
    return build_router_config(snap)


def test_a_dual_stack_network_carries_its_64_mode_and_reservations() -> None:
    p = dataclasses.replace(port(1, "10.1.1.3"), ipv6="2001:db8:10::100")
    cfg = build(DUAL, ZONE6, p)
    (gn,) = cfg.guest_networks
    assert (gn.ipv6_cidr, gn.ipv6_gateway, gn.ipv6_mode) == (
        "2001:db8:10::/64", "2001:db8:10::1", "dhcpv6_stateful")
    assert [h.ipv6 for h in gn.hosts] == ["2001:db8:10::100"]
    # The uplink: the EUI-64 address of the public MAC (02:00:00:00:00:01).
    assert cfg.ipv6_uplink.address == "2001:db8:ffff::ff:fe00:1/64"
    assert cfg.ipv6_uplink.gateway == "2001:db8:ffff::1"
    assert list(cfg.bgp.prefixes) == ["2001:db8:10::/64"]
    assert [(n.address, n.asn) for n in cfg.bgp.neighbors] == [
        ("203.0.113.1", 64496), ("2001:db8:ffff::1", 64496)]


def test_a_routed_network_has_no_source_nat_and_is_announced() -> None:
    cfg = build(dataclasses.replace(NET, routed=True))
    assert list(cfg.source_nats) == []
    assert list(cfg.bgp.prefixes) == ["10.1.1.0/24"]
    assert cfg.bgp.router_id == "203.0.113.10"


def test_nothing_routed_no_bgp_and_no_ipv6_zone_no_uplink() -> None:
    assert not build(NET).HasField("bgp")
    plain = build(NET, ZONE)
    assert not plain.HasField("ipv6_uplink")
    assert len(plain.source_nats) == 1


def test_an_ipv4_only_router_has_no_ipv6_uplink_in_a_zone_with_ipv6() -> None:
    """Nothing of its own to route over IPv6: no uplink, so the router keeps
    IPv6 off on its links (no link-local chatter on the provider segment)."""
    assert not build(NET, ZONE6).HasField("ipv6_uplink")
    assert build(DUAL, ZONE6).HasField("ipv6_uplink")


def test_a_routed_ipv4_only_router_peers_over_ipv4_only() -> None:
    """IPv6 peers get IPv6 prefixes only: with none, no session to them."""
    cfg = build(dataclasses.replace(NET, routed=True), ZONE6)
    assert not cfg.HasField("ipv6_uplink")
    assert [(n.address, n.asn) for n in cfg.bgp.neighbors] == [("203.0.113.1", 64496)]
