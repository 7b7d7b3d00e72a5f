"""Checks of edge requests (port forwards, static NAT, firewall rules) that
need no store: every problem names its request field, and every value that
reaches a router is normalised here (CIDRs in canonical form, protocols
lower-case, ranges filled in)."""

from __future__ import annotations

import dataclasses
import ipaddress

from netmgr.errors import InvalidArgument, Violation
from netmgr.rules import show
from netmgr.validation import check_id, raise_if

PORT_MIN, PORT_MAX = 1, 65535
MAX_CIDRS = 64
# A forwarded range is expanded to one map element per port in the router.
MAX_RANGE = 4096
FORWARD_PROTOCOLS = ("tcp", "udp")
FIREWALL_PROTOCOLS = ("tcp", "udp", "icmp", "all")
INGRESS, EGRESS = "ingress", "egress"


@dataclasses.dataclass(frozen=True, slots=True)
class PortForwardSpec:
    public_ip_id: str
    protocol: str
    public_port: int
    public_port_end: int
    port_id: str
    private_port: int
    private_port_end: int
    source_cidrs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class StaticNatSpec:
    public_ip_id: str
    port_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class FirewallRuleSpec:
    direction: str
    public_ip_id: str
    network_id: str
    protocol: str
    port: int
    port_end: int
    icmp_type: int
    icmp_code: int
    cidrs: tuple[str, ...] = ()


def _id(out: list[Violation], value: str, field: str) -> str:
    try:
        return check_id(value, field)
    except InvalidArgument as e:
        out.extend(e.violations)
        return value


def cidrs_problems(values: tuple[str, ...] | list[str], field: str) -> tuple[
        list[Violation], tuple[str, ...]]:
    """Violations, and the CIDRs in canonical form (host bits must be zero)."""
    out: list[Violation] = []
    canon: list[str] = []
    if len(values) > MAX_CIDRS:
        out.append(Violation(field, f"at most {MAX_CIDRS} entries"))
    for i, v in enumerate(values):
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as e:
            reason = "has host bits set" if "host bits" in str(e) else "is not an IPv4 CIDR"
            out.append(Violation(f"{field}[{i}]", f"{show(v)} {reason}"))
            continue
        canon.append(str(net))
    return out, tuple(sorted(set(canon)))


def _port(out: list[Violation], value: int, field: str, *, zero_ok: bool = False) -> None:
    if zero_ok and value == 0:
        return
    if not PORT_MIN <= value <= PORT_MAX:
        out.append(Violation(field, f"{value} is not a port ({PORT_MIN}-{PORT_MAX})"))


def _range(out: list[Violation], start: int, end: int, field_start: str,
           field_end: str) -> int:
    """The range's end (end 0 means a single port); reports reversed ranges."""
    _port(out, start, field_start)
    _port(out, end, field_end, zero_ok=True)
    if end == 0:
        return start
    if end < start:
        out.append(Violation(field_end, f"range {start}-{end} is reversed"))
    elif end - start + 1 > MAX_RANGE:
        out.append(Violation(field_end, f"a range covers at most {MAX_RANGE} ports"))
    return end


def check_port_forward(spec: PortForwardSpec, prefix: str = "port_forward") -> PortForwardSpec:
    out: list[Violation] = []
    public_ip_id = _id(out, spec.public_ip_id, f"{prefix}.public_ip_id")
    port_id = _id(out, spec.port_id, f"{prefix}.port_id")
    proto = spec.protocol.lower()
    if proto not in FORWARD_PROTOCOLS:
        out.append(Violation(f"{prefix}.protocol",
                             f"{show(spec.protocol)} is not one of {', '.join(FORWARD_PROTOCOLS)}"))
    pub_end = _range(out, spec.public_port, spec.public_port_end,
                     f"{prefix}.public_port", f"{prefix}.public_port_end")
    length = pub_end - spec.public_port
    priv_end = spec.private_port_end or (spec.private_port + length)
    priv_end = _range(out, spec.private_port, priv_end if spec.private_port_end else 0,
                      f"{prefix}.private_port", f"{prefix}.private_port_end")
    if not spec.private_port_end:
        priv_end = spec.private_port + length
        if PORT_MIN <= spec.private_port <= PORT_MAX and priv_end > PORT_MAX:
            out.append(Violation(f"{prefix}.private_port",
                                 f"{spec.private_port}+{length} runs past {PORT_MAX}"))
    elif not out and priv_end - spec.private_port != length:
        out.append(Violation(
            f"{prefix}.private_port_end",
            f"the private range {spec.private_port}-{priv_end} and the public range "
            f"{spec.public_port}-{pub_end} have different lengths"))
    problems, cidrs = cidrs_problems(spec.source_cidrs, f"{prefix}.source_cidrs")
    out += problems
    raise_if(out)
    return PortForwardSpec(public_ip_id, proto, spec.public_port, pub_end, port_id,
                           spec.private_port, priv_end, cidrs)


def check_static_nat(spec: StaticNatSpec, prefix: str = "static_nat") -> StaticNatSpec:
    out: list[Violation] = []
    public_ip_id = _id(out, spec.public_ip_id, f"{prefix}.public_ip_id")
    port_id = _id(out, spec.port_id, f"{prefix}.port_id")
    raise_if(out)
    return StaticNatSpec(public_ip_id, port_id)


def check_firewall_rule(spec: FirewallRuleSpec,
                        prefix: str = "firewall_rule") -> FirewallRuleSpec:
    out: list[Violation] = []
    public_ip_id, network_id = "", ""
    if spec.direction == INGRESS:
        public_ip_id = _id(out, spec.public_ip_id, f"{prefix}.public_ip_id")
    elif spec.direction == EGRESS:
        network_id = _id(out, spec.network_id, f"{prefix}.network_id")
    else:
        out.append(Violation(f"{prefix}.direction", "must be ingress or egress"))
    proto = spec.protocol.lower()
    port, port_end, icmp_type, icmp_code = 0, 0, -1, -1
    if proto not in FIREWALL_PROTOCOLS:
        allowed = ", ".join(FIREWALL_PROTOCOLS)
        out.append(Violation(f"{prefix}.protocol",
                             f"{show(spec.protocol)} is not one of {allowed}"))
    elif proto in FORWARD_PROTOCOLS:
        if spec.port == 0 and spec.port_end == 0:
            port, port_end = PORT_MIN, PORT_MAX
        else:
            port = spec.port
            port_end = _range(out, spec.port, spec.port_end, f"{prefix}.port",
                              f"{prefix}.port_end")
    elif proto == "icmp":
        icmp_type, icmp_code = spec.icmp_type, spec.icmp_code
        if not -1 <= icmp_type <= 255:
            out.append(Violation(f"{prefix}.icmp_type", f"{icmp_type} is not -1 or 0-255"))
        if not -1 <= icmp_code <= 255:
            out.append(Violation(f"{prefix}.icmp_code", f"{icmp_code} is not -1 or 0-255"))
        if icmp_type == -1 and icmp_code not in (-1,):
            out.append(Violation(f"{prefix}.icmp_code", "a code needs a type"))
    if proto not in FORWARD_PROTOCOLS and (spec.port or spec.port_end):
        out.append(Violation(f"{prefix}.port", f"ports apply to tcp and udp, not {proto!r}"))
    problems, cidrs = cidrs_problems(spec.cidrs, f"{prefix}.cidrs")
    out += problems
    raise_if(out)
    return FirewallRuleSpec(spec.direction, public_ip_id, network_id, proto, port, port_end,
                            icmp_type, icmp_code, cidrs)
