"""Security groups, their rules, and a port's port-security settings.

A group is a tenant's set of allow rules. A rule matches one direction, one
IP version, a protocol (with a destination port range or an ICMP type/code)
and a remote end: a CIDR, another group of the tenant (whose member ports'
addresses are kept current as ports join and leave), or anywhere. The checks
here need no store; the store checks what needs one (a remote group of the
tenant, an allowed address pair overlapping another port's address).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence

from common.grpc_errors import InvalidArgument, Violation
from netmgr.model.core import AddressPair
from netmgr.model.field_rules import mac_problem, name_problem, show
from netmgr.model.validation import _collect, check_id, raise_if

DEFAULT_GROUP = "default"
MAX_DESCRIPTION = 255
MAX_GROUPS_PER_PORT = 16
MAX_ADDRESS_PAIRS = 10
MAX_RULES_PER_GROUP = 1000
NAMED_PROTOCOLS = ("tcp", "udp", "icmp", "all")
# A protocol number that has a name is stored by its name: one spelling, one rule.
PROTOCOL_NAMES = {"ipv4": {"6": "tcp", "17": "udp", "1": "icmp"},
                  "ipv6": {"6": "tcp", "17": "udp", "58": "icmp"}}


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSpec:
    direction: str
    ethertype: str = "ipv4"
    protocol: str = "all"
    port_min: int = 0
    port_max: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    remote_cidr: str = ""
    remote_group_id: str = ""
    description: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityGroupRule:
    id: str
    security_group_id: str
    tenant_id: str
    spec: RuleSpec
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityGroup:
    id: str
    tenant_id: str
    name: str
    description: str
    rules: tuple[SecurityGroupRule, ...]
    port_count: int
    created_at: dt.datetime


def default_rules() -> tuple[RuleSpec, ...]:
    """A tenant's default group: all egress, ingress from members of the group
    itself (its remote group is filled in when the group is made)."""
    return (RuleSpec("egress", "ipv4"), RuleSpec("egress", "ipv6"),
            RuleSpec("ingress", "ipv4", remote_group_id="self"),
            RuleSpec("ingress", "ipv6", remote_group_id="self"))


def description_problem(value: str) -> str | None:
    if len(value) > MAX_DESCRIPTION or not value.isprintable():
        return f"must be at most {MAX_DESCRIPTION} printable characters"
    return None


def check_group(name: str, description: str, prefix: str = "security_group") -> None:
    problem = name_problem(name)
    if problem is None and len(name) > 63:
        problem = "at most 63 characters"
    if problem is None and name == DEFAULT_GROUP:
        problem = "'default' is the tenant's own default group"
    raise_if(_collect((f"{prefix}.name", problem),
                      (f"{prefix}.description", description_problem(description))))


def _network(value: str, ethertype: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    net = ipaddress.ip_network(value, strict=True)
    if (net.version == 4) != (ethertype == "ipv4"):
        raise ValueError(f"not an {ethertype} CIDR")
    return net


def _protocol(raw: str, ethertype: str, field: str, out: list[Violation]) -> str:
    proto = (raw or "all").lower()
    if proto.isdigit() and len(proto) <= 3 and int(proto) <= 255:
        proto = str(int(proto))
        return PROTOCOL_NAMES.get(ethertype, {}).get(proto, proto)
    if proto not in NAMED_PROTOCOLS:
        out.append(Violation(field, f"{show(raw)} is not tcp, udp, icmp, all or an IP "
                                    "protocol number 0-255"))
    return proto


def check_rule(spec: RuleSpec, prefix: str = "rule") -> RuleSpec:
    """Every field of a rule; returns it normalised (lower case, the port range
    filled in, what does not apply to the protocol zeroed, the CIDR canonical)."""
    out: list[Violation] = []
    if spec.direction not in ("ingress", "egress"):
        out.append(Violation(f"{prefix}.direction",
                             f"{show(spec.direction)} is not ingress or egress"))
    ethertype = (spec.ethertype or "ipv4").lower()
    if ethertype not in ("ipv4", "ipv6"):
        out.append(Violation(f"{prefix}.ethertype", f"{show(spec.ethertype)} is not ipv4 or ipv6"))
    proto = _protocol(spec.protocol, ethertype, f"{prefix}.protocol", out)
    port_min, port_max, icmp_type, icmp_code = spec.port_min, spec.port_max, -1, -1
    if proto in ("tcp", "udp"):
        if not 0 <= port_min <= 65535:
            out.append(Violation(f"{prefix}.port_min", f"{port_min} is not 0 (every port) "
                                                       "or 1-65535"))
        if port_max and not max(port_min, 1) <= port_max <= 65535:
            out.append(Violation(f"{prefix}.port_max",
                                 f"{port_max} is not {max(port_min, 1)}-65535 (or 0: port_min)"))
        if port_max and not port_min:
            out.append(Violation(f"{prefix}.port_min", "a range needs its first port"))
        port_max = port_max or port_min
    else:
        if port_min or port_max:
            out.append(Violation(f"{prefix}.port_min",
                                 f"ports apply to tcp and udp, not {show(proto)}"))
        port_min = port_max = 0
    if proto == "icmp":
        icmp_type, icmp_code = spec.icmp_type, spec.icmp_code
        if not -1 <= icmp_type <= 255:
            out.append(Violation(f"{prefix}.icmp_type", f"{icmp_type} is not -1 (any) or 0-255"))
        if not -1 <= icmp_code <= 255:
            out.append(Violation(f"{prefix}.icmp_code", f"{icmp_code} is not -1 (any) or 0-255"))
        if icmp_type == -1 and icmp_code != -1:
            out.append(Violation(f"{prefix}.icmp_code", "a code needs its type"))
    elif spec.icmp_type != -1 or spec.icmp_code != -1:
        out.append(Violation(f"{prefix}.icmp_type",
                             f"ICMP type and code apply to icmp, not {show(proto)}"))
    remote_cidr = spec.remote_cidr
    if remote_cidr:
        try:
            remote_cidr = str(_network(remote_cidr, ethertype))
        except ValueError as e:
            why = f" ({e})" if remote_cidr.isprintable() and len(remote_cidr) <= 64 else ""
            out.append(Violation(f"{prefix}.remote_cidr",
                                 f"{show(spec.remote_cidr)} is not a valid {ethertype} CIDR{why}"))
    remote_group_id = spec.remote_group_id
    if remote_group_id and remote_group_id != "self":
        try:
            check_id(remote_group_id, f"{prefix}.remote_group_id")
        except InvalidArgument as e:
            out += e.violations
    if spec.remote_cidr and spec.remote_group_id:
        out.append(Violation(f"{prefix}.remote_group_id",
                             "a rule has a remote CIDR or a remote group, not both"))
    if (p := description_problem(spec.description)) is not None:
        out.append(Violation(f"{prefix}.description", p))
    raise_if(out)
    return RuleSpec(spec.direction, ethertype, proto, port_min, port_max, icmp_type, icmp_code,
                    remote_cidr, remote_group_id, spec.description)


def check_group_ids(ids: Sequence[str], port_security: bool,
                    field: str = "port.security_group_ids") -> tuple[str, ...]:
    out: list[Violation] = []
    if len(ids) > MAX_GROUPS_PER_PORT:
        out.append(Violation(field, f"at most {MAX_GROUPS_PER_PORT} groups"))
    if ids and not port_security:
        out.append(Violation(field, "a port without port security has no security groups"))
    for i, gid in enumerate(ids):
        try:
            check_id(gid, f"{field}[{i}]")
        except InvalidArgument as e:
            out += e.violations
    if len(set(ids)) != len(ids):
        out.append(Violation(field, "a group is named twice"))
    raise_if(out)
    return tuple(ids)


def check_address_pairs(pairs: Sequence[AddressPair], port_security: bool,
                        field: str = "port.allowed_address_pairs") -> tuple[AddressPair, ...]:
    out: list[Violation] = []
    if len(pairs) > MAX_ADDRESS_PAIRS:
        raise InvalidArgument.one(field, f"at most {MAX_ADDRESS_PAIRS} pairs")
    if pairs and not port_security:
        out.append(Violation(field, "a port without port security needs no allowed pairs"))
    done: list[AddressPair] = []
    for i, pair in enumerate(pairs):
        try:
            net = ipaddress.ip_network(pair.ip, strict=True)
            ip = str(net.network_address) if net.num_addresses == 1 else str(net)
            if net.is_multicast or net.is_unspecified or net.prefixlen == 0:
                raise ValueError("not a unicast address or network")
        except ValueError:
            out.append(Violation(f"{field}[{i}].ip",
                                 f"{show(pair.ip)} is not an IP address or CIDR"))
            continue
        mac = pair.mac.lower()
        if mac and (p := mac_problem(mac)) is not None:
            out.append(Violation(f"{field}[{i}].mac", p))
        done.append(AddressPair(ip, mac))
    if len(set(done)) != len(done):
        out.append(Violation(field, "a pair is named twice"))
    raise_if(out)
    return tuple(done)


def pair_overlaps(pair: AddressPair, address: str) -> bool:
    net = ipaddress.ip_network(pair.ip)
    addr = ipaddress.ip_address(address)
    return addr.version == net.version and addr in net


@dataclasses.dataclass(frozen=True, slots=True)
class FilteredPort:
    """A port bound to a host, with the groups that filter it (none when its
    port security is off: ``filtered`` False)."""

    port_id: str
    mac: str
    ip: str
    pairs: tuple[AddressPair, ...]
    groups: tuple[str, ...]
    filtered: bool
    # Its IPv6 address on a dual-stack network ("" on an IPv4-only one).
    ipv6: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class HostFilterSnapshot:
    """What one compute host enforces, read in one transaction: its ports, the
    rules of their groups, and the members of every remote group those rules
    name (member ports' addresses and allowed pairs, on any host)."""

    host: str
    ports: tuple[FilteredPort, ...]
    rules: Mapping[str, tuple[RuleSpec, ...]]
    members: Mapping[str, tuple[str, ...]]
