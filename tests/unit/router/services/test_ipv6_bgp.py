"""The router's IPv6, guest ingress and BGP parts as rendered and verified
(pure: no daemon); the daemons themselves: tests/integration/router/
test_router_ipv6.py and test_router_bgp.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import routing_pb2 as rpb

from router.errors import CheckError, ConfigError
from router.services import bgp, ipv6
from router.services.base import Context
from router.services.nftables import routed
from tests.lib.routerconfigs import good_config, render


def dual_stack(mode: str = "dhcpv6_stateful") -> pb.RouterConfig:
    cfg = good_config()
    net = cfg.guest_networks[0]
    net.ipv6_cidr, net.ipv6_gateway, net.ipv6_mode = "2001:db8:10::/64", "2001:db8:10::1", mode
    net.hosts[0].ipv6 = "2001:db8:10::100"
    cfg.ipv6_uplink.CopyFrom(rpb.Ipv6Uplink(address="2001:db8:ffff::10/64",
                                            gateway="2001:db8:ffff::1"))
    return cfg


@pytest.mark.parametrize(("mode", "range_mode"), [
    ("slaac", "ra-only"), ("dhcpv6_stateless", "ra-stateless"), ("dhcpv6_stateful", "static")])
def test_dnsmasq_advertises_the_64_in_the_networks_mode(mode: str, range_mode: str) -> None:
    conf = render("dnsmasq", dual_stack(mode))["dnsmasq.conf"]
    assert "enable-ra" in conf.splitlines()
    assert f"constructor:g-net1,{range_mode},64,3600" in conf
    assert "option6:dns-server,[::]" in conf


def test_only_a_stateful_network_reserves_the_ports_address_by_mac() -> None:
    stateful = render("dnsmasq", dual_stack("dhcpv6_stateful"))
    slaac = render("dnsmasq", dual_stack("slaac"))
    assert stateful["dhcp-hosts/p1"] == "02:aa:00:00:00:11,10.10.0.11,[2001:db8:10::100],vm1\n"
    assert slaac["dhcp-hosts/p1"] == "02:aa:00:00:00:11,10.10.0.11,vm1\n"
    # AAAA and PTR either way.
    assert "2001:db8:10::100 vm1.tenant.test vm1\n" in slaac["hosts/p1"]


def test_an_ipv4_only_router_renders_no_ipv6() -> None:
    assert "enable-ra" not in render("dnsmasq", good_config())["dnsmasq.conf"]
    assert render("ipv6", good_config()) == {}
    assert render("bgp", good_config()) == {}


def _break(change: Callable[[pb.RouterConfig], None]) -> pb.RouterConfig:
    cfg = dual_stack()
    change(cfg)
    return cfg


BAD_IPV6 = [
    lambda c: setattr(c.guest_networks[0], "ipv6_cidr", "2001:db8:10::/56"),
    lambda c: setattr(c.guest_networks[0], "ipv6_cidr", "10.0.0.0/24"),
    lambda c: setattr(c.guest_networks[0], "ipv6_gateway", "2001:db8:99::1"),
    lambda c: setattr(c.guest_networks[0], "ipv6_mode", "stateful"),
    lambda c: setattr(c.guest_networks[0].hosts[0], "ipv6", "2001:db8:99::5"),
    lambda c: setattr(c.ipv6_uplink, "gateway", "2001:db8:1::1"),
]


@pytest.mark.parametrize("change", BAD_IPV6)
def test_ipv6_verify_refuses(change: Callable[[pb.RouterConfig], None]) -> None:
    with pytest.raises(ConfigError):
        ipv6.verify(_break(change))


def _rule(**kw: object) -> rpb.GuestIngressRule:
    fields: dict[str, object] = {"id": "a0000000-0000-4000-8000-000000000001",
                                 "network_id": "net1", "protocol": "tcp", "port_start": 80}
    fields.update(kw)
    return rpb.GuestIngressRule(**fields)  # type: ignore[arg-type]


def test_a_guest_ingress_rule_becomes_one_line_per_family_it_names() -> None:
    cfg = dual_stack()
    cfg.guest_networks[0].routed = True
    cfg.guest_ingress_rules.append(_rule(cidrs=["2001:db8:beef::/64"]))
    cfg.guest_ingress_rules.append(_rule(id="a0000000-0000-4000-8000-000000000002",
                                         protocol="icmp", icmp_type=128, icmp_code=-1,
                                         port_start=0))
    routed.verify(cfg)
    lines = routed.guest_ingress_lines(cfg)
    assert lines == [
        "ip6 daddr 2001:db8:10::/64 ip6 saddr { 2001:db8:beef::/64 } tcp dport 80 counter "
        'accept comment "cn:firewall:a0000000-0000-4000-8000-000000000001"',
        'ip daddr 10.10.0.0/24 meta l4proto icmp icmp type 128 counter accept comment '
        '"cn:firewall:a0000000-0000-4000-8000-000000000002"',
        "ip6 daddr 2001:db8:10::/64 meta l4proto ipv6-icmp icmpv6 type 128 counter accept "
        'comment "cn:firewall:a0000000-0000-4000-8000-000000000002"',
    ]


def test_a_guest_ingress_rule_for_a_family_the_network_lacks_is_refused() -> None:
    cfg = dual_stack()  # not routed: IPv6 guests only
    cfg.guest_ingress_rules.append(_rule(cidrs=["198.51.100.0/24"]))
    with pytest.raises(ConfigError, match="IPv4"):
        routed.verify(cfg)


def bgp_config(prefixes: list[str], neighbors: list[tuple[str, int]]) -> pb.RouterConfig:
    cfg = dual_stack()
    cfg.guest_networks[0].routed = True
    cfg.bgp.CopyFrom(rpb.Bgp(asn=64512, router_id="203.0.113.10", prefixes=prefixes,
                             neighbors=[rpb.BgpNeighbor(address=a, asn=n) for a, n in neighbors]))
    return cfg


PEERS = [("203.0.113.1", 64496), ("2001:db8:ffff::1", 64496)]


def test_bgpd_announces_each_family_to_its_own_peers_from_its_own_address() -> None:
    conf = render("bgp", bgp_config(["10.10.0.0/24", "2001:db8:10::/64"], PEERS))[bgp.CONF]
    v4, v6 = conf.split("address-family ipv4 unicast")[1].split("address-family ipv6 unicast")
    assert "neighbor cn-v4-as64496 activate" in v4
    assert "network 10.10.0.0/24" in v4
    assert "2001:db8" not in v4
    assert "cn-v6" not in v4
    assert "neighbor cn-v6-as64496 activate" in v6
    assert "network 2001:db8:10::/64" in v6
    assert "neighbor 2001:db8:ffff::1 peer-group cn-v6-as64496" in conf
    assert "neighbor cn-v6-as64496 update-source 2001:db8:ffff::10" in conf
    assert "neighbor 203.0.113.1 peer-group cn-v4-as64496" in conf
    assert "neighbor cn-v4-as64496 update-source 203.0.113.10" in conf


def test_a_peer_takes_its_source_from_its_group_not_its_own_line() -> None:
    """A peer's own update-source line resets it after its connect timer
    started it: its session would then wait for bgpd's 1 s idle timer."""
    conf = render("bgp", bgp_config(["10.10.0.0/24", "2001:db8:10::/64"], PEERS))[bgp.CONF]
    for addr, _ in PEERS:
        own = [line.strip() for line in conf.splitlines()
               if line.strip().startswith(f"neighbor {addr} ")]
        assert own == [f"neighbor {addr} peer-group cn-v{6 if ':' in addr else 4}-as64496",
                       f"neighbor {addr} timers connect {bgp.CONNECT_S}"]
    assert f"coalesce-time {bgp.COALESCE_MS}" in conf


def test_a_change_of_prefixes_or_peers_is_made_in_place() -> None:
    old = json.loads(render("bgp", bgp_config(["10.10.0.0/24", "2001:db8:10::/64"],
                                              PEERS))[bgp.STATE])
    new = json.loads(render("bgp", bgp_config(["2001:db8:10::/64"],
                                              [PEERS[1], ("203.0.113.2", 64497)]))[bgp.STATE])
    cmds = bgp.changes(old, new)
    assert cmds[:3] == ["configure terminal", "router bgp 64512", "no neighbor 203.0.113.1"]
    assert "neighbor cn-v4-as64497 remote-as 64497" in cmds
    assert "neighbor 203.0.113.2 peer-group cn-v4-as64497" in cmds
    v4 = cmds[cmds.index("address-family ipv4 unicast"):cmds.index("address-family ipv6 unicast")]
    assert "neighbor cn-v4-as64497 activate" in v4
    assert "no network 10.10.0.0/24" in cmds
    assert not any("2001:db8:ffff::1" in c for c in cmds)  # untouched: its session stays
    assert bgp.changes(new, new) == ["configure terminal", "router bgp 64512",
                                     "address-family ipv4 unicast", "exit-address-family",
                                     "address-family ipv6 unicast", "exit-address-family"]


BAD_BGP = [
    bgp_config(["192.0.2.0/24"], PEERS),  # not one of the router's networks
    bgp_config(["10.10.0.0/24"], [("203.0.113.1", 0)]),
    bgp_config(["10.10.0.0/24"], [("fe80::1", 64496)]),
    bgp_config(["10.10.0.0/24"], [("peer\n1", 64496)]),
]


@pytest.mark.parametrize("cfg", BAD_BGP)
def test_bgp_verify_refuses(cfg: pb.RouterConfig) -> None:
    with pytest.raises(ConfigError):
        bgp.verify(cfg)


def test_an_ipv6_acl_rule_matches_ipv6_and_icmpv6() -> None:
    from router.services.nftables import acl

    web = pb.AclRule(id="a0000000-0000-4000-8000-000000000003", number=10, action="allow",
                     direction="ingress", protocol="tcp", port_start=443,
                     cidrs=["2001:db8:beef::/64"])
    ping = pb.AclRule(id="a0000000-0000-4000-8000-000000000004", number=20, action="allow",
                      direction="ingress", protocol="icmp", icmp_type=128, icmp_code=-1,
                      cidrs=["::/0"])
    assert acl._match(web) == ["ip6 saddr { 2001:db8:beef::/64 }", "tcp dport 443"]
    assert acl._match(ping) == ["meta nfproto ipv6", "meta l4proto ipv6-icmp",
                                "icmpv6 type 128"]


def _check_ctx(tmp_path: Path) -> Context:
    return cast(Context, SimpleNamespace(state_dir=str(tmp_path)))


@pytest.mark.skipif(not os.path.exists(bgp.BGPD), reason="FRR's bgpd is not installed")
def test_bgpd_takes_every_line_of_the_rendered_config(tmp_path: Path) -> None:
    rendered = render("bgp", bgp_config(["10.10.0.0/24", "2001:db8:10::/64"], PEERS))
    bgp.check(_check_ctx(tmp_path), rendered)


@pytest.mark.skipif(not os.path.exists(bgp.BGPD), reason="FRR's bgpd is not installed")
def test_a_line_bgpd_does_not_know_is_refused_though_bgpd_exits_0(tmp_path: Path) -> None:
    rendered = dict(render("bgp", bgp_config(["10.10.0.0/24"], PEERS[:1])))
    rendered[bgp.CONF] = rendered[bgp.CONF].replace(" coalesce-time", " bgp coalesce-time")
    with pytest.raises(CheckError, match="coalesce-time"):
        bgp.check(_check_ctx(tmp_path), rendered)


def test_a_guest_ingress_delta_leaves_the_table_text_a_full_render_would_have() -> None:
    """After a delta rewrote the guest_ingress chain, the loaded table's text
    is the new config's: a full push of that config then changes no rule."""
    from router.services.nftables import service as nft_service

    before = dual_stack()
    before.guest_ingress_rules.append(_rule(cidrs=["2001:db8:beef::/64"]))
    after_rule = _rule(id="a0000000-0000-4000-8000-000000000002", port_start=443,
                       cidrs=["2001:db8:cafe::/64"])
    after = routed.with_rules(before, {"a0000000-0000-4000-8000-000000000001"}, [after_rule])
    full = dual_stack()
    full.guest_ingress_rules.append(after_rule)
    old_text = render("nftables", before)[nft_service.SKELETON]
    new_text = render("nftables", full)[nft_service.SKELETON]
    assert old_text != new_text
    assert routed.skeleton_with(old_text, after) == new_text
    cmds = routed.chain_commands(after).splitlines()
    assert cmds[0] == "flush chain inet cloudnet guest_ingress"
    assert cmds[1:] == [f"add rule inet cloudnet guest_ingress {line}" for line in [
        *routed.guest_ingress_lines(full), 'counter drop comment "cn:fw-default-drop"']]


def test_a_guest_ingress_delta_with_a_bad_rule_is_refused_naming_it() -> None:
    cfg = dual_stack()  # IPv6 guests only
    bad = _rule(id="a0000000-0000-4000-8000-000000000009", cidrs=["198.51.100.0/24"])
    with pytest.raises(ConfigError, match="a0000000-0000-4000-8000-000000000009"):
        routed.with_rules(cfg, set(), [bad])


def test_an_ipv4_only_router_is_healthy_without_asking_the_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from common import netlink

    def no_netlink(*args: object, **kwargs: object) -> None:
        raise AssertionError("an IPv4-only router's IPv6 health dumped the namespace")

    monkeypatch.setattr(netlink, "rtnl", no_netlink)
    monkeypatch.setattr(netlink, "links", no_netlink)
    ctx = cast(Context, SimpleNamespace(netns="cn-test-no-such-netns"))
    status = ipv6.Ipv6().health(ctx, good_config())
    assert (status.name, status.healthy, status.detail) == ("ipv6", True, "no IPv6")
