"""Checks of VPC requests that need no store: every problem names its field.

A VPC's super CIDR may be wider than a network's (/8 to /28); a tier is a
network (``validation.check_network_spec``) whose CIDR must lie inside its
VPC's and overlap no other tier of that VPC (``check_tier_placement``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from netmgr.errors import Violation
from netmgr.model import Network, Zone
from netmgr.rules import FORBIDDEN_NETS, dns_name_problem, name_problem, show
from netmgr.validation import _collect, raise_if

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
