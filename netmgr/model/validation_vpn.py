"""Validation of the VPN API's inputs; every violation names its field.

The proposal grammar and the pre-shared key rules are the router's own
(``common.ipsec_proposals``): what the API accepts, the router loads.
Overlaps with the gateway's networks are checked by the store, which knows
them (``check_peer_cidrs``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Sequence

from common import ipsec_proposals as ip
from common.grpc_errors import Violation
from netmgr.model.field_rules import show
from netmgr.model.ipv6_rules import ipv6_cidr_problem
from netmgr.model.validation import raise_if
from netmgr.model.validation_edge import cidrs_problems

MAX_PEER_CIDRS = 16
# An IPv6 peer network: /16 or longer (a shorter one would take the guests'
# routed IPv6 traffic to the internet into the tunnel), unicast.
PEER_CIDR6_MIN = 16
DEFAULT_DPD_DELAY = 10
NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


@dataclasses.dataclass(frozen=True, slots=True)
class CustomerGatewaySpec:
    name: str
    peer_address: str
    peer_cidrs: tuple[str, ...]
    psk: str
    ike_version: int  # 1 or 2
    ike_proposals: tuple[str, ...]
    esp_proposals: tuple[str, ...]
    ike_lifetime: int
    esp_lifetime: int
    dpd_delay: int
    dpd_timeout: int
    force_encap: bool


def _peer_address(value: str) -> str | None:
    try:
        a = ipaddress.IPv4Address(value)
    except ValueError:
        return f"{show(value)} is not an IPv4 address"
    if a.is_multicast or a.is_unspecified or a.is_loopback or a.is_link_local \
            or a.is_reserved or a == ipaddress.IPv4Address("255.255.255.255"):
        return f"{a} is not a unicast address a gateway can have"
    return None


def check_customer_gateway(spec: CustomerGatewaySpec,
                           prefix: str = "customer_gateway") -> CustomerGatewaySpec:
    """The spec with defaults filled in and CIDRs canonical; raises
    InvalidArgument naming every bad field."""
    out: list[Violation] = []
    if not NAME_RE.fullmatch(spec.name):
        out.append(Violation(f"{prefix}.name", "1-63 letters, digits, '.', '_' or '-'"))
    reason = _peer_address(spec.peer_address)
    if reason:
        out.append(Violation(f"{prefix}.peer_address", reason))
    cidr_bad, cidrs = _peer_cidrs(list(spec.peer_cidrs), f"{prefix}.peer_cidrs")
    out.extend(cidr_bad)
    if not spec.peer_cidrs:
        out.append(Violation(f"{prefix}.peer_cidrs", "at least one network behind the peer"))
    elif len(spec.peer_cidrs) > MAX_PEER_CIDRS:
        out.append(Violation(f"{prefix}.peer_cidrs", f"at most {MAX_PEER_CIDRS} networks"))
    nets = [ipaddress.ip_network(c) for c in cidrs]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            if a.version == b.version and a.overlaps(b):
                out.append(Violation(f"{prefix}.peer_cidrs", f"{a} overlaps {b}"))
    if not ip.psk_ok(spec.psk):
        # Never echo the key back.
        out.append(Violation(f"{prefix}.psk", f"must be {ip.PSK_RULE} (got {len(spec.psk)} "
                                              "characters" + ("" if set(spec.psk) <= ip.PSK_CHARS
                                                              else ", some not allowed") + ")"))
    if spec.ike_version not in (1, 2):
        out.append(Violation(f"{prefix}.ike_version", "must be 1 or 2"))
    for field, proposals, ike in (("ike_proposals", spec.ike_proposals, True),
                                  ("esp_proposals", spec.esp_proposals, False)):
        if len(proposals) > ip.MAX_PROPOSALS:
            out.append(Violation(f"{prefix}.{field}", f"at most {ip.MAX_PROPOSALS} proposals"))
        for i, p in enumerate(proposals):
            why = ip.check(p, ike)
            if why:
                out.append(Violation(f"{prefix}.{field}[{i}]", f"unsupported proposal: {why}"))
    for field, value in (("ike_lifetime_seconds", spec.ike_lifetime),
                         ("esp_lifetime_seconds", spec.esp_lifetime)):
        if value and not ip.LIFETIME_MIN <= value <= ip.LIFETIME_MAX:
            out.append(Violation(f"{prefix}.{field}",
                                 f"must be {ip.LIFETIME_MIN}-{ip.LIFETIME_MAX} (or 0: default)"))
    if spec.ike_lifetime and spec.esp_lifetime and spec.esp_lifetime > spec.ike_lifetime:
        out.append(Violation(f"{prefix}.esp_lifetime_seconds",
                             "must not exceed ike_lifetime_seconds"))
    if spec.dpd_delay > 3600:
        out.append(Violation(f"{prefix}.dpd_delay_seconds", "must be 0-3600"))
    if spec.dpd_timeout > 3600 or (spec.dpd_timeout and spec.dpd_timeout < spec.dpd_delay):
        out.append(Violation(f"{prefix}.dpd_timeout_seconds",
                             "must be 0-3600 and not shorter than dpd_delay_seconds"))
    raise_if(out)
    return dataclasses.replace(
        spec, peer_cidrs=cidrs, ike_proposals=tuple(spec.ike_proposals),
        esp_proposals=tuple(spec.esp_proposals), dpd_delay=spec.dpd_delay or DEFAULT_DPD_DELAY)


def _peer_cidrs(values: list[str], field: str) -> tuple[list[Violation], tuple[str, ...]]:
    """Per family: IPv4 as an edge rule's CIDRs, IPv6 unicast /16 to /128;
    the canonical CIDRs, IPv4 first."""
    v4 = [(i, v) for i, v in enumerate(values) if not _is_ipv6(v)]
    out, canon4 = cidrs_problems([v for _, v in v4], field)
    # cidrs_problems numbers what it was given: renumber as the client sent them.
    out = [_renumber(x, field, [i for i, _ in v4]) for x in out]
    canon6: set[ipaddress.IPv6Network] = set()
    for i, v in enumerate(values):
        if not _is_ipv6(v):
            continue
        why = ipv6_cidr_problem(v, PEER_CIDR6_MIN, 128)
        if why:
            out.append(Violation(f"{field}[{i}]", why))
        else:
            canon6.add(ipaddress.IPv6Network(v))
    return out, canon4 + tuple(str(n) for n in sorted(canon6))


def _renumber(v: Violation, field: str, index: list[int]) -> Violation:
    m = re.fullmatch(re.escape(field) + r"\[(\d+)\]", v.field)
    if not m:
        return v
    return dataclasses.replace(v, field=f"{field}[{index[int(m.group(1))]}]")


def _is_ipv6(value: str) -> bool:
    return ":" in value


def check_peer_cidrs(peer_cidrs: Sequence[str], local_cidrs: Sequence[str], field: str) -> None:
    """The peer's networks must not overlap the gateway's (the router could
    not tell where to send the traffic), and an IPv6 one needs an IPv6
    network on the gateway's side (its network's or its VPC tiers' /64s)."""
    out = []
    local = [ipaddress.ip_network(lc) for lc in local_cidrs]
    for c in peer_cidrs:
        net = ipaddress.ip_network(c)
        if net.version == 6 and not any(lc.version == 6 for lc in local):
            out.append(Violation(field, f"peer CIDR {c} is IPv6 and the gateway's network has "
                                        "no IPv6 prefix (give it an ipv6_mode)"))
        for lc in local:
            if net.version == lc.version and net.overlaps(lc):
                out.append(Violation(field, f"peer CIDR {c} overlaps the gateway's network {lc}"))
    raise_if(out)
