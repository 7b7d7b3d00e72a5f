"""Checks of VPC requests that need no store: every problem names its field.

A VPC's super CIDR may be wider than a network's (/8 to /28); a tier is a
network (``validation.check_network_spec``) whose CIDR must lie inside its
VPC's and overlap no other tier of that VPC (``check_tier_placement``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from common.grpc_errors import Violation
from netmgr.model.core import Network, Zone
from netmgr.model.field_rules import FORBIDDEN_NETS, dns_name_problem, name_problem, show
from netmgr.model.ipv6_rules import ipv6_net_kind_problem
from netmgr.model.validation import _collect, raise_if
from netmgr.model.validation_edge import any_family_cidrs_problems
from netmgr.model.vlans import private_gateway_vlan_problem

VPC_MIN_PREFIX, VPC_MAX_PREFIX = 8, 28


@dataclasses.dataclass(frozen=True, slots=True)
class VpcSpec:
    name: str
    cidr: str
    domain: str = ""


def vpc_cidr_problem(value: str) -> str | None:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as e:
        return f"{show(value)} is not a valid IPv4 CIDR" + (
            "" if not value.isprintable() else f" ({e})")
    if "/" not in value:
        return f"{show(value)} needs a prefix length (/{VPC_MIN_PREFIX} to /{VPC_MAX_PREFIX})"
    if not VPC_MIN_PREFIX <= net.prefixlen <= VPC_MAX_PREFIX:
        return f"prefix /{net.prefixlen} is not between /{VPC_MIN_PREFIX} and /{VPC_MAX_PREFIX}"
    for bad in FORBIDDEN_NETS:
        if net.overlaps(bad):
            return f"{value} overlaps reserved range {bad}"
    return None


def check_vpc_spec(spec: VpcSpec, prefix: str = "vpc") -> VpcSpec:
    domain = spec.domain.lower()
    raise_if(_collect(
        (f"{prefix}.name", name_problem(spec.name)),
        (f"{prefix}.cidr", vpc_cidr_problem(spec.cidr)),
        (f"{prefix}.domain", dns_name_problem(domain) if domain else None),
    ))
    return dataclasses.replace(spec, cidr=str(ipaddress.IPv4Network(spec.cidr)), domain=domain)


def check_vpc_name(name: str, prefix: str = "vpc") -> str:
    """A VPC's new name (the one field of a VPC that changes)."""
    raise_if(_collect((f"{prefix}.name", name_problem(name))))
    return name


def check_vpc_placement(cidr: str, zone: Zone, field: str = "vpc.cidr") -> list[Violation]:
    if ipaddress.IPv4Network(cidr).overlaps(ipaddress.IPv4Network(zone.public_cidr)):
        return [Violation(field, f"{cidr} overlaps the zone's public network {zone.public_cidr}")]
    return []


def check_tier_placement(cidr: str, vpc_cidr: str, tiers: Iterable[Network],
                         field: str = "network.cidr") -> list[Violation]:
    """A tier lies inside its VPC's CIDR and overlaps none of its other tiers."""
    net = ipaddress.IPv4Network(cidr)
    if not net.subnet_of(ipaddress.IPv4Network(vpc_cidr)):
        return [Violation(field, f"{cidr} is not inside the VPC's CIDR {vpc_cidr}")]
    for other in tiers:
        if net.overlaps(ipaddress.IPv4Network(other.cidr)):
            return [Violation(
                field, f"{cidr} overlaps tier {other.name!r} ({other.id}, {other.cidr})")]
    return []


# ------------------------------------------------------------ network ACLs

ACL_NUMBER_MIN, ACL_NUMBER_MAX = 1, 65535
ACL_NAMED_PROTOCOLS = ("tcp", "udp", "icmp", "all")
MAX_ACL_DESCRIPTION = 255
# Rules per list, both directions (the router accepts more: router.services.nftables.acl).
MAX_ACL_RULES = 500


@dataclasses.dataclass(frozen=True, slots=True)
class AclRuleSpec:
    number: int
    action: str
    direction: str
    protocol: str
    port: int = 0
    port_end: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    cidrs: tuple[str, ...] = ()


def check_acl_name(name: str, description: str, prefix: str = "network_acl") -> None:
    raise_if(_collect(
        (f"{prefix}.name", name_problem(name)),
        (f"{prefix}.description",
         f"must be at most {MAX_ACL_DESCRIPTION} printable characters"
         if len(description) > MAX_ACL_DESCRIPTION or not description.isprintable() else None),
    ))


def check_acl_rule(spec: AclRuleSpec, prefix: str = "rule") -> AclRuleSpec:
    """Every field of a rule; returns it normalised (protocol lower-case,
    port_end filled in, fields that do not apply to the protocol zeroed)."""
    out: list[Violation] = []
    if not ACL_NUMBER_MIN <= spec.number <= ACL_NUMBER_MAX:
        out.append(Violation(f"{prefix}.number",
                             f"{spec.number} is not {ACL_NUMBER_MIN}-{ACL_NUMBER_MAX}"))
    if spec.action not in ("allow", "deny"):
        out.append(Violation(f"{prefix}.action", "must be allow or deny"))
    if spec.direction not in ("ingress", "egress"):
        out.append(Violation(f"{prefix}.direction", "must be ingress or egress"))
    proto = spec.protocol.lower()
    if proto.isdigit() and len(proto) <= 3 and int(proto) <= 255:
        proto = str(int(proto))
        # A number that has a name is stored by its name: one spelling, one rule.
        proto = {"6": "tcp", "17": "udp", "1": "icmp"}.get(proto, proto)
    elif proto not in ACL_NAMED_PROTOCOLS:
        out.append(Violation(f"{prefix}.protocol", f"{show(spec.protocol)} is not tcp, udp, "
                             "icmp, all or an IP protocol number 0-255"))
    port, port_end, icmp_type, icmp_code = spec.port, spec.port_end, -1, -1
    if proto in ("tcp", "udp"):
        if not 0 <= port <= 65535:
            out.append(Violation(f"{prefix}.port", f"{port} is not 0 (every port) or 1-65535"))
        if port_end and not port <= port_end <= 65535:
            out.append(Violation(f"{prefix}.port_end",
                                 f"{port_end} is not {max(port, 1)}-65535 (or 0: the port)"))
        if port_end and not port:
            out.append(Violation(f"{prefix}.port", "a range needs its first port"))
        port_end = port_end or port
    else:
        if port or port_end:
            out.append(Violation(f"{prefix}.port",
                                 f"ports apply to tcp and udp, not {show(proto)}"))
        port = port_end = 0
    if proto == "icmp":
        icmp_type, icmp_code = spec.icmp_type, spec.icmp_code
        if not -1 <= icmp_type <= 255:
            out.append(Violation(f"{prefix}.icmp_type", f"{icmp_type} is not -1 (any) or 0-255"))
        if not -1 <= icmp_code <= 255:
            out.append(Violation(f"{prefix}.icmp_code", f"{icmp_code} is not -1 (any) or 0-255"))
        if icmp_type == -1 and icmp_code != -1:
            out.append(Violation(f"{prefix}.icmp_code", "a code needs its type"))
    elif spec.icmp_type not in (0, -1) or spec.icmp_code not in (0, -1):
        out.append(Violation(f"{prefix}.icmp_type", f"icmp type/code apply to icmp, not "
                             f"{show(proto)}"))
    # Either family, one per rule (a tier's IPv6 is filtered by the same lists).
    problems, cidrs = any_family_cidrs_problems(tuple(spec.cidrs), f"{prefix}.cidrs")
    out += problems
    if len({":" in c for c in cidrs}) > 1:
        out.append(Violation(f"{prefix}.cidrs", "one family per rule: IPv4 or IPv6 CIDRs, "
                             "not both"))
    raise_if(out)
    return AclRuleSpec(spec.number, spec.action, spec.direction, proto, port, port_end,
                       icmp_type, icmp_code, cidrs)


# --------------------------------------------- static routes, private gateways

PG_MIN_PREFIX, PG_MAX_PREFIX = 16, 30


def check_static_route(cidr: str, next_hop: str, prefix: str = "static_route") -> tuple[str, str]:
    """Store-free checks; returns the canonical CIDR and next hop. Either
    family, the next hop of the destination's."""
    if ":" in cidr or ":" in next_hop:
        return _check_static_route6(cidr, next_hop, prefix)
    out: list[Violation] = []
    try:
        net = ipaddress.IPv4Network(cidr, strict=True)
        if net.prefixlen == 0:
            out.append(Violation(f"{prefix}.cidr", "0.0.0.0/0 is the router's own default "
                                 "route (the zone's gateway)"))
        elif "/" not in cidr:
            out.append(Violation(f"{prefix}.cidr", f"{show(cidr)} needs a prefix length"))
        elif any(net.overlaps(bad) for bad in FORBIDDEN_NETS):
            out.append(Violation(f"{prefix}.cidr", f"{cidr} overlaps a reserved range"))
    except ValueError as e:
        reason = "has host bits set" if "host bits" in str(e) else "is not an IP CIDR"
        out.append(Violation(f"{prefix}.cidr", f"{show(cidr)} {reason}"))
    try:
        hop = ipaddress.IPv4Address(next_hop)
    except ValueError:
        out.append(Violation(f"{prefix}.next_hop", f"{show(next_hop)} is not an IPv4 address"))
    raise_if(out)
    return str(net), str(hop)


def _check_static_route6(cidr: str, next_hop: str, prefix: str) -> tuple[str, str]:
    out: list[Violation] = []
    net6: ipaddress.IPv6Network | None = None
    try:
        net6 = ipaddress.IPv6Network(cidr, strict=True)
    except ValueError as e:
        reason = ("has host bits set" if "host bits" in str(e)
                  else "is an IPv4 CIDR; the next hop is IPv6" if "." in cidr and ":" not in cidr
                  else "is not an IP CIDR")
        out.append(Violation(f"{prefix}.cidr", f"{show(cidr)} {reason}"))
    if net6 is not None:
        if net6.prefixlen == 0:
            out.append(Violation(f"{prefix}.cidr", "::/0 is the router's own default route "
                                 "(the zone's IPv6 gateway)"))
        elif "/" not in cidr:
            out.append(Violation(f"{prefix}.cidr", f"{show(cidr)} needs a prefix length"))
        elif (problem := ipv6_net_kind_problem(net6, cidr)) is not None:
            out.append(Violation(f"{prefix}.cidr", problem))
    hop = _address6(next_hop)
    if isinstance(hop, str):
        out.append(Violation(f"{prefix}.next_hop", hop))
    raise_if(out)
    assert net6 is not None
    assert not isinstance(hop, str)
    return str(net6), str(hop)


def _address6(value: str) -> ipaddress.IPv6Address | str:
    """An IPv6 next hop, or why not."""
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return f"{show(value)} is not an IP address"
    if addr.version != 6:
        return f"{show(value)} is an IPv4 address; the destination is IPv6"
    if addr.is_link_local or addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        return f"{show(value)} is not a routable unicast address on a tier"
    return addr


def next_hop_problem(hop: str, subnets: Iterable[tuple[str, str, str]]) -> tuple[str, str]:
    """The (id, interface CIDR) of the tier or gateway subnet holding ``hop``
    (given (id, subnet CIDR, router address) triples, IPv6 /64s among them);
    raises naming the field."""
    addr = ipaddress.ip_address(hop)
    for obj_id, cidr, own in subnets:
        net = ipaddress.ip_network(cidr)
        if net.version == addr.version and addr in net:
            ends = ((net.network_address,) if net.version == 6
                    else (net.network_address, net.broadcast_address))
            if addr in ends or addr == ipaddress.ip_address(own):
                raise_if([Violation("static_route.next_hop",
                                    f"{hop} is the network, broadcast or router address of "
                                    f"{cidr}")])
            return obj_id, cidr
    raise_if([Violation("static_route.next_hop",
                        f"{hop} is outside every tier and private gateway of the VPC")])
    raise AssertionError("unreachable")


def check_private_gateway(vlan_id: int, address: str, gateway: str, zone: Zone,
                          prefix: str = "private_gateway") -> tuple[str, str]:
    """Store-free checks; returns the canonical address (CIDR form) and gateway."""
    out: list[Violation] = []
    # 0: allocated by the store from the zone's private gateway range.
    problem = private_gateway_vlan_problem(vlan_id, zone) if vlan_id else ""
    if problem:
        out.append(Violation(f"{prefix}.vlan_id", problem))
    iface = None
    try:
        if "/" not in address:
            raise ValueError("needs a prefix length")
        iface = ipaddress.IPv4Interface(address)
        net = iface.network
        if not PG_MIN_PREFIX <= net.prefixlen <= PG_MAX_PREFIX:
            out.append(Violation(f"{prefix}.address", f"prefix /{net.prefixlen} is not "
                                 f"/{PG_MIN_PREFIX}-/{PG_MAX_PREFIX}"))
            iface = None
        elif iface.ip in (net.network_address, net.broadcast_address):
            out.append(Violation(f"{prefix}.address", f"{address} is the network or broadcast "
                                 "address"))
        elif net.overlaps(ipaddress.IPv4Network(zone.public_cidr)) or any(
                net.overlaps(bad) for bad in FORBIDDEN_NETS):
            out.append(Violation(f"{prefix}.address", f"{net} overlaps the public network or "
                                 "a reserved range"))
    except ValueError:
        out.append(Violation(f"{prefix}.address", f"{show(address)} is not an IPv4 address "
                             "with its prefix (a.b.c.d/n)"))
    try:
        gw = ipaddress.IPv4Address(gateway)
        if iface is not None and (gw not in iface.network or gw == iface.ip):
            out.append(Violation(f"{prefix}.gateway", f"{gateway} is not another address of "
                                 f"{iface.network}"))
    except ValueError:
        out.append(Violation(f"{prefix}.gateway", f"{show(gateway)} is not an IPv4 address"))
    raise_if(out)
    assert iface is not None
    return str(iface), str(gw)
