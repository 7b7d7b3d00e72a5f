"""The edge part of a router's table as explain evaluates it: which object's
element lets a packet to a public IP through the edge filter, which egress
rule a guest's packet meets.

The router keeps these as elements of sets looked up by one rule each
(``router/services/nftables/edge.py``, ``router/templates/nftables/cloudnet.nft.j2``),
and when several objects cover the same packet the element (and so the trace)
names one of them by a fixed rule. Explain names the same one:

* edge filter: the exact sets ``allow_<prefix length>`` first, shortest
  prefix first; in one of them the first object in config order (port
  forwards, then load balancers, then ingress rules, each by ID) owns an
  element. Port ranges longer than ``EXPAND_MAX`` live in interval sets
  instead (port forwards, then TCP/UDP rules), then ICMP rules, then rules
  for every protocol; an interval element is owned by the smallest ID among
  the objects covering it.
* egress: TCP/UDP rules, then ICMP rules, then rules for every protocol, the
  smallest ID first.
"""

from __future__ import annotations

import dataclasses

from netmgr.explain.router_view import IPv4, RouterView, net
from netmgr.model import edge as me

# Port ranges up to this many ports are expanded into exact elements; keep
# equal to router.services.nftables.edge.EXPAND_MAX (a unit test checks it).
EXPAND_MAX = 64
ANY = "0.0.0.0/0"
# What explain's "IP/icmp" stands for: an echo request.
ECHO_REQUEST = (8, 0)
FORWARD_PROTOCOLS = ("tcp", "udp")


@dataclasses.dataclass(frozen=True)
class Packet:
    src: IPv4
    dst: IPv4
    proto: str  # tcp | udp | icmp
    port: int  # destination port; 0 for ICMP


@dataclasses.dataclass(frozen=True)
class Opener:
    """An object whose element lets a packet through the edge filter."""

    kind: str  # portforward | loadbalancer | firewall
    ident: str
    proto: str
    lo: int
    hi: int
    cidrs: tuple[str, ...]

    def covers(self, pkt: Packet) -> bool:
        return (self.proto == pkt.proto and self.lo <= pkt.port <= self.hi
                and any(pkt.src in net(c) for c in self.cidrs or (ANY,)))


def port_range(lo: int, hi: int) -> tuple[int, int]:
    """A rule's ports as the router gets them (0: every port)."""
    if not lo:
        return 1, 65535
    return lo, hi or lo


def icmp_matches(icmp_type: int, icmp_code: int) -> bool:
    """Does a rule's ICMP type/code (-1: any) cover an echo request?"""
    return icmp_type in (-1, ECHO_REQUEST[0]) and icmp_code in (-1, ECHO_REQUEST[1])


def _openers(rv: RouterView, public_ip: str) -> list[Opener]:
    """The objects with elements in the edge's allow sets for ``public_ip``,
    in the order the router inserts them."""
    out = []
    for f in sorted(rv.edge.port_forwards, key=lambda f: f.id):
        if f.public_ip == public_ip:
            out.append(Opener("portforward", f.id, f.protocol,
                              *port_range(f.public_port, f.public_port_end), f.source_cidrs))
    for lb in sorted(rv.edge.load_balancers, key=lambda lb: lb.id):
        if lb.public_ip == public_ip:
            out.append(Opener("loadbalancer", lb.id, "tcp", lb.public_port, lb.public_port,
                              lb.source_cidrs))
    for r in sorted(rv.edge.firewall_rules, key=lambda r: r.id):
        if r.direction == "ingress" and r.public_ip == public_ip \
                and r.protocol in FORWARD_PROTOCOLS:
            out.append(Opener("firewall", r.id, r.protocol, *port_range(r.port, r.port_end),
                              r.cidrs))
    return out


def _short(o: Opener) -> bool:
    return o.hi - o.lo + 1 <= EXPAND_MAX


def edge_opener(rv: RouterView, pkt: Packet) -> tuple[str, str] | None:
    """(kind, ID) of the object the router's edge filter accepts ``pkt`` by
    (its destination is one of the router's public IPs), or None: dropped."""
    dst = str(pkt.dst)
    openers = _openers(rv, dst)
    if pkt.proto in FORWARD_PROTOCOLS:
        exact = [o for o in openers if _short(o)]
        lengths = sorted({0} | {net(c).prefixlen for o in exact for c in o.cidrs or (ANY,)})
        for plen in lengths:
            for o in exact:
                if o.proto == pkt.proto and o.lo <= pkt.port <= o.hi and any(
                        net(c).prefixlen == plen and pkt.src in net(c)
                        for c in o.cidrs or (ANY,)):
                    return o.kind, o.ident
        for kind in ("portforward", "firewall"):
            ranged = [o for o in openers if o.kind == kind and not _short(o) and o.covers(pkt)]
            if ranged:
                return kind, min(o.ident for o in ranged)
    rules = [r for r in rv.edge.firewall_rules
             if r.direction == "ingress" and r.public_ip == dst
             and any(pkt.src in net(c) for c in r.cidrs or (ANY,))]
    if pkt.proto == "icmp":
        hits = [r for r in rules if r.protocol == "icmp"
                and icmp_matches(r.icmp_type, r.icmp_code)]
        if hits:
            return "firewall", min(r.id for r in hits)
    hits = [r for r in rules if r.protocol == "all"]
    if hits:
        return "firewall", min(r.id for r in hits)
    return None


def port_forward_to(rv: RouterView, pkt: Packet) -> tuple[me.PortForward, int] | None:
    """The port forward the router's DNAT map sends ``pkt`` through, and the
    private port (the map is keyed on address, protocol and port only: any
    packet to it, from any side, whatever its source)."""
    if pkt.proto not in FORWARD_PROTOCOLS:
        return None
    for f in rv.edge.port_forwards:
        lo, hi = port_range(f.public_port, f.public_port_end)
        if f.public_ip == str(pkt.dst) and f.protocol == pkt.proto and lo <= pkt.port <= hi:
            return f, f.private_port + (pkt.port - lo)
    return None


def egress_rule(rv: RouterView, network_id: str, pkt: Packet) -> me.FirewallRule | None:
    """The egress rule of a network that ``pkt`` meets (it flips the
    network's default), or None."""
    rules = [r for r in rv.edge.firewall_rules
             if r.direction == "egress" and r.network_id == network_id
             and any(pkt.dst in net(c) for c in r.cidrs or (ANY,))]
    groups = (
        [r for r in rules if r.protocol == pkt.proto and pkt.proto in FORWARD_PROTOCOLS
         and port_range(r.port, r.port_end)[0] <= pkt.port <= port_range(r.port, r.port_end)[1]],
        [r for r in rules if r.protocol == "icmp" == pkt.proto
         and icmp_matches(r.icmp_type, r.icmp_code)],
        [r for r in rules if r.protocol == "all"],
    )
    for hits in groups:
        if hits:
            return min(hits, key=lambda r: r.id)
    return None


def load_balancer_at(rv: RouterView, pkt: Packet) -> me.LoadBalancer | None:
    """The load balancer listening on the packet's destination (HAProxy in
    the router: the input chain's listener set, TCP only)."""
    if pkt.proto != "tcp":
        return None
    return next((lb for lb in sorted(rv.edge.load_balancers, key=lambda lb: lb.id)
                 if lb.public_ip == str(pkt.dst) and lb.public_port == pkt.port), None)
