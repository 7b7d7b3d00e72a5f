"""Routed guests in the router's nftables table: IPv6 /64s and routed IPv4
networks, reached by their own addresses (no NAT either way).

Guests' IPv6 leaves through the public interface from their own /64 only;
nothing from outside reaches a guest (IPv6, or a routed IPv4 network) unless
a guest ingress rule allows it: the forward chain jumps to ``guest_ingress``,
whose rules (one per rule and family, ``cn:firewall:<id>``) accept, and whose
end drops. ICMPv6 errors (packet too big above all: IPv6 routers never
fragment) always pass; neighbour discovery is never forwarded and the input
chain takes it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import routing_pb2 as rpb

from router.errors import ConfigError
from router.lib import validate

PROTOCOLS = ("tcp", "udp", "icmp", "all")
MAX_CIDRS = 64
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _destinations(cfg: pb.RouterConfig) -> dict[str, dict[int, str]]:
    """network ID -> family -> the guests' prefix reached by their own address."""
    out: dict[str, dict[int, str]] = {}
    for net in cfg.guest_networks:
        by_family = out.setdefault(net.network_id, {})
        if net.routed:
            by_family[4] = net.cidr
        if net.ipv6_cidr:
            by_family[6] = net.ipv6_cidr
    return out


def _cidrs(rule: rpb.GuestIngressRule, kid: tuple[str, str]) -> list[Net]:
    what = f"firewall rule {rule.id}"
    if len(rule.cidrs) > MAX_CIDRS:
        raise ConfigError(f"{what}: more than {MAX_CIDRS} cidrs", *kid)
    nets: list[Net] = []
    for cidr in rule.cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr, strict=True))
        except ValueError:
            raise ConfigError(f"{what}: {cidr!r} is not a network", *kid) from None
    return nets


def verify(cfg: pb.RouterConfig) -> None:
    dests = _destinations(cfg)
    for rule in cfg.guest_ingress_rules:
        validate.check_id("firewall", rule.id)
        kid = ("firewall", rule.id)
        what = f"firewall rule {rule.id}"
        families = dests.get(rule.network_id)
        if not families:
            raise ConfigError(f"{what}: network {rule.network_id!r} has no routed or IPv6 "
                              "guests here", *kid)
        if rule.protocol not in PROTOCOLS:
            raise ConfigError(f"{what}: protocol {rule.protocol!r}", *kid)
        if rule.protocol in ("tcp", "udp") and not (
                1 <= rule.port_start <= 65535 and rule.port_start <= (
                    rule.port_end or rule.port_start) <= 65535):
            raise ConfigError(f"{what}: port range {rule.port_start}-{rule.port_end}", *kid)
        if not (-1 <= rule.icmp_type <= 255 and -1 <= rule.icmp_code <= 255):
            raise ConfigError(f"{what}: icmp type/code out of range", *kid)
        for net in _cidrs(rule, kid):
            if net.version not in families:
                raise ConfigError(f"{what}: {net} is IPv{net.version}; network "
                                  f"{rule.network_id} has no such guests", *kid)


def _line(rule: rpb.GuestIngressRule, family: int, dest: str, sources: list[Net]) -> str:
    ip = "ip" if family == 4 else "ip6"
    parts = [f"{ip} daddr {dest}"]
    if sources:
        parts.append(f"{ip} saddr {{ {', '.join(str(n) for n in sources)} }}")
    if rule.protocol in ("tcp", "udp"):
        end = rule.port_end or rule.port_start
        ports = str(rule.port_start) if end == rule.port_start else f"{rule.port_start}-{end}"
        parts.append(f"{rule.protocol} dport {ports}")
    elif rule.protocol == "icmp":
        icmp = "icmp" if family == 4 else "icmpv6"
        parts.append(f"meta l4proto {'icmp' if family == 4 else 'ipv6-icmp'}")
        if rule.icmp_type >= 0:
            parts.append(f"{icmp} type {rule.icmp_type}")
            if rule.icmp_code >= 0:
                parts.append(f"{icmp} code {rule.icmp_code}")
    return " ".join([*parts, "counter accept", f'comment "cn:firewall:{rule.id}"'])


def guest_ingress_lines(cfg: pb.RouterConfig) -> list[str]:
    """The guest_ingress chain's rules (verified values only), in rule ID order."""
    dests = _destinations(cfg)
    lines = []
    for rule in sorted(cfg.guest_ingress_rules, key=lambda r: r.id):
        nets = [ipaddress.ip_network(c) for c in rule.cidrs]
        for family, dest in sorted(dests.get(rule.network_id, {}).items()):
            sources = sorted((n for n in nets if n.version == family),
                             key=lambda n: (int(n.network_address), n.prefixlen))
            if nets and not sources:
                continue  # the rule names sources of the other family only
            lines.append(_line(rule, family, dest, sources))
    return lines


def context(cfg: pb.RouterConfig) -> dict[str, Any]:
    return {
        "guest_nets6": sorted({n.ipv6_cidr for n in cfg.guest_networks if n.ipv6_cidr}),
        "routed_nets": sorted({n.cidr for n in cfg.guest_networks if n.routed}),
        "guest_ingress": guest_ingress_lines(cfg),
    }


# ---- edge deltas: the guest_ingress chain rewritten in place ----------------

# The kind an edge delta names a guest ingress rule by in its removed refs.
GUEST_INGRESS = "guest-ingress"
_CHAIN = "inet cloudnet guest_ingress"
# The chain's last rule, as the table's template has it.
_DEFAULT_DROP = 'counter drop comment "cn:fw-default-drop"'


def with_rules(cfg: pb.RouterConfig, removed: set[str],
               added: list[rpb.GuestIngressRule]) -> pb.RouterConfig:
    """What verify and guest_ingress_lines need of ``cfg`` after a delta:
    its guest networks, and its guest ingress rules less ``removed`` (IDs)
    and the re-added ones, plus ``added``. Raises ConfigError naming a bad
    added rule."""
    out = pb.RouterConfig(router_id=cfg.router_id)
    out.guest_networks.extend(cfg.guest_networks)
    gone = removed | {r.id for r in added}
    out.guest_ingress_rules.extend(r for r in cfg.guest_ingress_rules if r.id not in gone)
    out.guest_ingress_rules.extend(added)
    verify(out)
    return out


def chain_commands(cfg: pb.RouterConfig) -> str:
    """nft commands making the loaded guest_ingress chain ``cfg``'s (one
    transaction with the rest of a delta): a few rules per router, so the
    chain is written whole."""
    lines = [f"flush chain {_CHAIN}"]
    lines += [f"add rule {_CHAIN} {line}" for line in guest_ingress_lines(cfg)]
    lines.append(f"add rule {_CHAIN} {_DEFAULT_DROP}")
    return "\n".join(lines) + "\n"


_CHAIN_TEXT = re.compile(r"(\tchain guest_ingress \{\n)(.*?)(\t\}\n)", re.DOTALL)


def skeleton_with(skeleton: str, cfg: pb.RouterConfig) -> str:
    """The loaded table's text (without its edge elements) once
    ``chain_commands(cfg)`` ran: its guest_ingress chain as the template
    writes it for ``cfg``; "" (load the whole table next time) if the text
    is not as expected."""
    body = "".join(f"\t\t{line}\n" for line in [*guest_ingress_lines(cfg), _DEFAULT_DROP])
    new, n = _CHAIN_TEXT.subn(lambda m: m.group(1) + body + m.group(3), skeleton)
    return new if n == 1 else ""
