"""Routed traffic in explain: IPv6 (every dual-stack network's /64) and
routed IPv4 networks, both never translated (docs/ipv6-and-bgp.md).

As the router's table has it (router/services/nftables/routed.py and the
forward chain): a guest's IPv6 from its network's /64 leaves to the public
side unfiltered (egress rules are IPv4 only); a routed guest's IPv4 leaves
by its egress rules as any guest's, and keeps its address (no source NAT);
towards a routed or IPv6 guest from outside, ICMPv6 errors pass, and the
guest_ingress chain accepts what a firewall rule naming the network allows
(in rule ID order) and drops the rest. Between a VPC's tiers over IPv6 the
network ACLs decide, which this module does not model: it says so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from cloudnet.netmgr.v1 import debug_pb2 as pb

from netmgr.explain.edge import icmp_matches, port_range
from netmgr.explain.result import DROP, Result
from netmgr.explain.router_view import RouterView
from netmgr.explain.world import World
from netmgr.model import core as model
from netmgr.model import edge as me

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
ECHO_REQUEST6 = 128


def _in(ip: Address, cidrs: Iterable[str]) -> bool:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    return any(n.version == ip.version and ip in n for n in nets)


def network6_of(world: World, ip: ipaddress.IPv6Address) -> model.Network | None:
    return next((n for n in world.networks if n.ipv6_cidr and _in(ip, [n.ipv6_cidr])), None)


def routed_network_of(world: World, ip: ipaddress.IPv4Address) -> model.Network | None:
    return next((n for n in world.networks if n.routed and _in(ip, [n.cidr])), None)


def _rule_matches(r: me.FirewallRule, src: Address, proto: str, port: int,
                  icmp_type: int) -> bool:
    cidrs = list(r.cidrs)
    if cidrs and not any(ipaddress.ip_network(c).version == src.version for c in cidrs):
        return False  # sources of the other family only: no line for this one
    if cidrs and not _in(src, cidrs):
        return False
    if r.protocol == "all":
        return True
    if r.protocol in ("tcp", "udp"):
        lo, hi = port_range(r.port, r.port_end)
        return r.protocol == proto and lo <= port <= hi
    if r.protocol == "icmp" and proto == "icmp":
        if src.version == 4:
            return icmp_matches(r.icmp_type, r.icmp_code)
        return r.icmp_type in (-1, icmp_type) and r.icmp_code in (-1, 0)
    return False


def guest_ingress(res: Result, rv: RouterView, net: model.Network, src: Address,
                  dst: Address, proto: str, port: int) -> pb.ExplainResponse:
    """From outside (the public side) to a guest of a routed or IPv6 network."""
    what = "ICMP echo" if proto == "icmp" else f"{proto}/{port}"
    res.step("network", net.id, f"{dst} is a guest of {net.name} "
             f"({net.ipv6_cidr if dst.version == 6 else net.cidr}), routed: no NAT")
    rules = sorted((r for r in rv.edge.firewall_rules
                    if r.direction == "ingress" and r.network_id == net.id and not r.public_ip),
                   key=lambda r: r.id)
    icmp_type = ECHO_REQUEST6 if dst.version == 6 else 8
    hit = next((r for r in rules if _rule_matches(r, src, proto, port, icmp_type)), None)
    if hit is not None:
        return res.done(True, "firewall", hit.id, f"ingress rule for network {net.name} "
                        f"allows {what} from {src}")
    return res.done(*DROP, f"no ingress firewall rule of network {net.name} allows {what} "
                    f"from {src} to its guests (routed and IPv6 guests are closed by default)")


def explain6(world: World, src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address,
             proto: str, port: int) -> pb.ExplainResponse:
    """An IPv6 flow: from a dual-stack network's guest, or from outside."""
    res = Result()
    src_net, dst_net = network6_of(world, src), network6_of(world, dst)
    if src_net is not None:
        res.router_id = src_net.router_id
        res.step("network", src_net.id, f"source {src} is in {src_net.ipv6_cidr}")
        if dst_net is src_net:
            return res.done(True, "network", src_net.id, f"{dst} is on the same segment")
        if dst_net is not None and dst_net.router_id == src_net.router_id:
            return res.done(False, "network", dst_net.id,
                            f"{dst} is in {dst_net.name}, on the same router: between tiers "
                            "the network ACLs decide and between isolated networks nothing "
                            "passes (IPv6 between networks is not modelled here)")
        res.step("network", src_net.id, "guest IPv6 leaves from its own /64, routed: no NAT "
                 "and no egress rule (egress rules match IPv4 only)")
        if dst_net is None:
            return res.done(True, "network", src_net.id,
                            f"routed to the provider edge with source {src} "
                            "(outside: not cloudnet's to decide further)")
    if dst_net is None:
        return res.done(False, "", "", f"{dst} is not in an IPv6 network of this tenant "
                        "(outside: not cloudnet's to decide)")
    if not dst_net.router_id:
        return res.done(False, "network", dst_net.id, "the network has no router")
    res.router_id = dst_net.router_id
    rv = world.router(dst_net.router_id)
    return guest_ingress(res, rv, dst_net, src, dst, proto, port)
