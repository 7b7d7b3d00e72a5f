"""Network ACLs as a VPC router applies them (``router/services/nftables/acl.py``):
a list's rules of one direction in number order, the first that matches
decides (allow goes on, deny drops), and a packet no rule matches is dropped
by the list's default deny. ``ingress`` rules guard traffic entering a tier
or private gateway (their CIDRs match the source), ``egress`` rules traffic
leaving it (their CIDRs match the destination). Names the deciding rule by ID
and number."""

from __future__ import annotations

from netmgr.explain.edge import ANY, Packet, port_range
from netmgr.explain.router_view import net
from netmgr.model import vpc as mv

PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}
# What explain's "IP/icmp" stands for: an echo request.
ECHO_REQUEST = (8, 0)

Verdict = tuple[bool, str, str, str]  # allowed, kind, id, reason


def rule_matches(rule: mv.AclRule, pkt: Packet) -> bool:
    peer = pkt.src if rule.direction == mv.INGRESS else pkt.dst
    cidrs = [c for c in rule.cidrs if net(c) != net(ANY)]
    if cidrs and not any(peer in net(c) for c in cidrs):
        return False
    if rule.protocol == "all":
        return True
    if rule.protocol.isdigit():
        return int(rule.protocol) == PROTO_NUMBERS.get(pkt.proto)
    if rule.protocol != pkt.proto:
        return False
    if pkt.proto == "icmp":
        # The router matches the type only when one is set, the code only with a type.
        if rule.icmp_type < 0:
            return True
        return rule.icmp_type == ECHO_REQUEST[0] and rule.icmp_code in (-1, ECHO_REQUEST[1])
    if not rule.port:
        return True
    lo, hi = port_range(rule.port, rule.port_end)
    return lo <= pkt.port <= hi


def acl_verdict(acl: mv.NetworkAcl, direction: str, pkt: Packet, what: str) -> Verdict:
    """The verdict of list ``acl`` on ``pkt`` in ``direction``; ``what``
    names the tier or gateway it guards (for the reason)."""
    rules = sorted((r for r in acl.rules if r.direction == direction), key=lambda r: r.number)
    for rule in rules:
        if rule_matches(rule, pkt):
            allowed = rule.action == mv.ALLOW
            return (allowed, "aclrule", rule.id,
                    f"{direction} rule {rule.number} of list {acl.name!r} ({what}) "
                    f"{'allows' if allowed else 'denies'} it")
    return (False, "acl-default-deny", acl.id,
            f"no {direction} rule of list {acl.name!r} ({what}) matches: denied")
