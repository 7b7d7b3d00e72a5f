"""VPC routing and network ACLs in the router's nftables table.

A VPC router forwards between its tiers. Each network ACL list in use gets
two regular chains, ``acl_<hash>_in`` (traffic entering a tier: cidrs are
sources) and ``acl_<hash>_out`` (traffic leaving it: cidrs are destinations),
holding the list's rules as ordered rules in number order. Ordered,
first-match-wins evaluation needs rules, not sets; lists are short, so the
per-packet cost is a few comparisons. An allow rule ``return``s to the
forward chain (the packet goes on to the other tier's list and the egress
firewall), a deny drops, and a packet no rule matches is dropped.

Two verdict maps keyed on the tier's interface, ``acl_in`` (by oifname) and
``acl_out`` (by iifname), jump to the chains of the tier's list, so a tier
costs one map lookup per direction whatever the number of tiers. The forward
chain accepts established and related traffic before any of this: replacing
a tier's list or editing a rule never touches flows already running (the
table is swapped atomically by one ``nft -f``, and conntrack keeps its
entries).

Every rule carries the comment ``cn:acl:<rule id>:<number>`` and a counter,
so `nft list` shows which numbered rule matched.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ConfigError
from router.lib import validate

ACTIONS = ("allow", "deny")
DIRECTIONS = ("ingress", "egress")
NAMED_PROTOCOLS = ("tcp", "udp", "icmp", "all")
# Rules per list; netmgr allows fewer (netmgr.model.validation_vpc.MAX_ACL_RULES).
MAX_RULES = 1000
# Tiers and private gateways: the interfaces a VPC router routes between.
INNER_ROLES = (pb.INTERFACE_ROLE_GUEST, pb.INTERFACE_ROLE_PRIVATE_GATEWAY)
MAX_CIDRS = 64


def _chain_id(acl_id: str) -> str:
    """A short, stable chain-name part of an ACL ID (a hash: the built-in
    lists' IDs share their leading digits)."""
    return hashlib.sha1(acl_id.encode()).hexdigest()[:12]


def verify(cfg: pb.RouterConfig) -> None:
    if not cfg.vpc_id:
        if cfg.network_acls or cfg.tier_acls:
            raise ConfigError("network ACLs are only served by a VPC router")
        return
    validate.check_id("vpc", cfg.vpc_id)
    acls: set[str] = set()
    chains: dict[str, str] = {}
    for acl in cfg.network_acls:
        validate.check_id("acl", acl.id)
        if acl.id in acls:
            raise ConfigError(f"acl {acl.id}: duplicate list", "acl", acl.id)
        acls.add(acl.id)
        if _chain_id(acl.id) in chains:
            raise ConfigError(f"acl {acl.id}: chain name clashes with acl "
                              f"{chains[_chain_id(acl.id)]}", "acl", acl.id)
        chains[_chain_id(acl.id)] = acl.id
        if len(acl.rules) > MAX_RULES:
            raise ConfigError(f"acl {acl.id}: more than {MAX_RULES} rules", "acl", acl.id)
        numbers: set[tuple[str, int]] = set()
        for rule in acl.rules:
            _verify_rule(acl, rule, numbers)
    guests = {i.name for i in cfg.interfaces if i.role in INNER_ROLES}
    seen: set[str] = set()
    for tier in cfg.tier_acls:
        what = f"tier {tier.network_id}"
        if tier.interface not in guests:
            raise ConfigError(f"{what}: {tier.interface!r} is not a tier or private gateway",
                              "network", tier.network_id)
        if tier.interface in seen:
            raise ConfigError(f"{what}: interface {tier.interface} has two lists",
                              "network", tier.network_id)
        seen.add(tier.interface)
        if tier.acl_id not in acls:
            raise ConfigError(f"{what}: acl {tier.acl_id!r} is not in the config",
                              "network", tier.network_id)


def _verify_rule(acl: pb.NetworkAcl, rule: pb.AclRule, numbers: set[tuple[str, int]]) -> None:
    validate.check_id("aclrule", rule.id)
    what, kid = f"acl rule {rule.id}", ("aclrule", rule.id)
    if not 1 <= rule.number <= 65535:
        raise ConfigError(f"{what}: number {rule.number} is not 1..65535", *kid)
    if (rule.direction, rule.number) in numbers:
        raise ConfigError(f"{what}: number {rule.number} is used twice in acl {acl.id}", *kid)
    numbers.add((rule.direction, rule.number))
    if rule.action not in ACTIONS:
        raise ConfigError(f"{what}: action {rule.action!r} is not allow or deny", *kid)
    if rule.direction not in DIRECTIONS:
        raise ConfigError(f"{what}: direction {rule.direction!r} is not ingress or egress", *kid)
    proto = rule.protocol
    if proto not in NAMED_PROTOCOLS and not (proto.isdigit() and 0 <= int(proto) <= 255):
        raise ConfigError(f"{what}: protocol {proto!r} is not tcp, udp, icmp, all or 0..255",
                          *kid)
    bad_ports = rule.port_start > 65535 or rule.port_end > 65535 or (
        rule.port_end and rule.port_end < rule.port_start)
    if proto in ("tcp", "udp") and bad_ports:
        raise ConfigError(f"{what}: port range {rule.port_start}-{rule.port_end}", *kid)
    if proto == "icmp" and not (-1 <= rule.icmp_type <= 255 and -1 <= rule.icmp_code <= 255):
        raise ConfigError(f"{what}: icmp type/code out of range", *kid)
    if len(rule.cidrs) > MAX_CIDRS:
        raise ConfigError(f"{what}: more than {MAX_CIDRS} cidrs", *kid)
    families = set()
    for cidr in rule.cidrs:
        try:
            families.add(ipaddress.ip_network(cidr, strict=True).version)
        except ValueError:
            raise ConfigError(f"{what}: {cidr!r} is not a network", *kid) from None
    if len(families) > 1:
        raise ConfigError(f"{what}: IPv4 and IPv6 cidrs in one rule", *kid)


def _match(rule: pb.AclRule) -> list[str]:
    """The nft match expressions of a rule (values verified: numbers, CIDRs)."""
    out = []
    v6 = any(":" in c for c in rule.cidrs)
    if rule.cidrs:
        field = "saddr" if rule.direction == "ingress" else "daddr"
        parsed = {ipaddress.ip_network(c) for c in rule.cidrs}
        nets = [str(n) for n in sorted(parsed, key=lambda n: (int(n.network_address),
                                                            n.prefixlen))]
        if nets not in (["0.0.0.0/0"], ["::/0"]):
            out.append(f"{'ip6' if v6 else 'ip'} {field} {{ {', '.join(nets)} }}")
        elif v6:
            out.append("meta nfproto ipv6")
        else:
            out.append("meta nfproto ipv4")
    if rule.protocol in ("tcp", "udp"):
        if rule.port_start:
            end = rule.port_end or rule.port_start
            ports = str(rule.port_start) if end == rule.port_start else f"{rule.port_start}-{end}"
            out.append(f"{rule.protocol} dport {ports}")
        else:
            out.append(f"meta l4proto {rule.protocol}")
    elif rule.protocol == "icmp":
        # An IPv6 rule's icmp is ICMPv6.
        icmp = "icmpv6" if v6 else "icmp"
        out.append(f"meta l4proto {'ipv6-icmp' if v6 else 'icmp'}")
        if rule.icmp_type >= 0:
            out.append(f"{icmp} type {rule.icmp_type}")
            if rule.icmp_code >= 0:
                out.append(f"{icmp} code {rule.icmp_code}")
    elif rule.protocol != "all":
        out.append(f"meta l4proto {int(rule.protocol)}")
    return out


def _rule_line(rule: pb.AclRule) -> str:
    verdict = "return" if rule.action == "allow" else "drop"
    validate.check_id("aclrule", rule.id)
    return " ".join([*_match(rule), "counter", verdict,
                     f'comment "cn:acl:{rule.id}:{rule.number}"'])


def chains(cfg: pb.RouterConfig) -> list[dict[str, Any]]:
    """Per list in use: its chain names and ordered rule lines."""
    out = []
    for acl in sorted(cfg.network_acls, key=lambda a: a.id):
        for direction, suffix in (("ingress", "in"), ("egress", "out")):
            rules = sorted((r for r in acl.rules if r.direction == direction),
                           key=lambda r: r.number)
            out.append({
                "name": f"acl_{_chain_id(acl.id)}_{suffix}",
                "rules": [_rule_line(r) for r in rules],
                "default": f'counter drop comment "cn:acl-default-deny:{acl.id}"',
            })
    return out


def context(cfg: pb.RouterConfig) -> dict[str, Any]:
    """What the table template needs: chains, the verdict maps' elements, and
    the lines of the forward chain (before the DNAT and egress rules)."""
    if not cfg.vpc_id:
        return {"acl_chains": [], "acl_maps": [], "acl_forward": []}
    by_acl = {a.id: _chain_id(a.id) for a in cfg.network_acls}
    tiers = sorted(cfg.tier_acls, key=lambda t: t.interface)
    maps = [
        {"name": "acl_in", "elements": [
            f'"{t.interface}" : jump acl_{by_acl[t.acl_id]}_in' for t in tiers]},
        {"name": "acl_out", "elements": [
            f'"{t.interface}" : jump acl_{by_acl[t.acl_id]}_out' for t in tiers]},
    ]
    inner = sorted(i.name for i in cfg.interfaces if i.role in INNER_ROLES)
    # Sources allowed between tiers: the tiers' and gateways' subnets, and
    # the networks static routes reach through them (no spoofed sources).
    sources = sorted(
        {str(ipaddress.IPv4Interface(a).network)
         for i in cfg.interfaces if i.role in INNER_ROLES for a in i.addresses}
        | {r.destination for r in cfg.routes if r.destination != "0.0.0.0/0"
           and r.interface in inner},
        key=lambda n: ipaddress.IPv4Network(n))
    forward = [
        'iifname vmap @acl_out comment "cn:acl: out of a tier"',
        'oifname vmap @acl_in comment "cn:acl: into a tier"',
    ]
    names = ", ".join(f'"{n}"' for n in inner)  # checked [a-z0-9-]{1,15}
    if sources:
        forward.append(
            f"iifname {{ {names} }} oifname {{ {names} }} ip saddr {{ {', '.join(sources)} }} "
            'counter accept comment "between tiers"')
    if any(n.ipv6_cidr for n in cfg.guest_networks):
        # Tiers' IPv6 from their own /64s (nftables/routed.py's set), and the
        # networks IPv6 static routes reach through them.
        forward.append(f"iifname {{ {names} }} oifname {{ {names} }} ip6 saddr @guest_nets6 "
                       'counter accept comment "between tiers"')
        behind = sorted({ipaddress.IPv6Network(r.destination) for r in cfg.ipv6_routes
                         if r.interface in inner})
        if behind:
            forward.append(f"iifname {{ {names} }} oifname {{ {names} }} "
                           f"ip6 saddr {{ {', '.join(map(str, behind))} }} "
                           'counter accept comment "between tiers"')
    return {"acl_chains": chains(cfg), "acl_maps": maps, "acl_forward": forward}


COUNTER_KIND = "aclrule"


def rule_counters(items: list[Any], totals: dict[tuple[str, str], list[int]]) -> None:
    """Add the counters of ACL rules (``cn:acl:<rule id>:<number>`` comments)
    from a JSON table listing to ``totals`` under (``aclrule``, rule id). A
    list used by several tiers has one chain, so its counts cover them all."""
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule:
            continue
        parts = str(rule.get("comment", "")).split(":")
        if len(parts) != 4 or parts[:2] != ["cn", "acl"]:
            continue
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):
                total = totals.setdefault((COUNTER_KIND, parts[2]), [0, 0])
                total[0] += int(counter.get("packets", 0))
                total[1] += int(counter.get("bytes", 0))
