"""Checks of edge requests (port forwards, static NAT, firewall rules) that
need no store: every problem names its request field, and every value that
reaches a router is normalised here (CIDRs in canonical form, protocols
lower-case, ranges filled in)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from common.grpc_errors import InvalidArgument, Violation
from netmgr.model.field_rules import free_text_problem, show
from netmgr.model.ipv6_rules import cidr_any_family_problem
from netmgr.model.validation import check_id, raise_if

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
            if _is_ipv6_network(v):
                reason = "is an IPv6 CIDR; this rule matches IPv4 traffic only"
            out.append(Violation(f"{field}[{i}]", f"{show(v)} {reason}"))
            continue
        canon.append(str(net))
    return out, tuple(sorted(set(canon)))


def _is_ipv6_network(value: str) -> bool:
    try:
        ipaddress.IPv6Network(value, strict=False)
    except ValueError:
        return False
    return True


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
    # Ingress to a public IP (IPv4, before DNAT), or to the guests of a routed
    # or dual-stack network by their own addresses (network_id, either family).
    guest_ingress = spec.direction == INGRESS and bool(spec.network_id) and not spec.public_ip_id
    if guest_ingress:
        network_id = _id(out, spec.network_id, f"{prefix}.network_id")
    elif spec.direction == INGRESS:
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
        out.append(Violation(f"{prefix}.port", f"ports apply to tcp and udp, not {show(proto)}"))
    if guest_ingress:
        problems, cidrs = any_family_cidrs_problems(spec.cidrs, f"{prefix}.cidrs")
    else:
        problems, cidrs = cidrs_problems(spec.cidrs, f"{prefix}.cidrs")
    out += problems
    raise_if(out)
    return FirewallRuleSpec(spec.direction, public_ip_id, network_id, proto, port, port_end,
                            icmp_type, icmp_code, cidrs)


def any_family_cidrs_problems(values: tuple[str, ...] | list[str], field: str) -> tuple[
        list[Violation], tuple[str, ...]]:
    """Like ``cidrs_problems``, IPv6 CIDRs taken too (canonical, IPv4 first)."""
    out: list[Violation] = []
    canon: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    if len(values) > MAX_CIDRS:
        out.append(Violation(field, f"at most {MAX_CIDRS} entries"))
    for i, v in enumerate(values):
        problem = cidr_any_family_problem(v)
        if problem is not None:
            out.append(Violation(f"{field}[{i}]", problem))
            continue
        canon.append(ipaddress.ip_network(v))
    ordered = sorted(set(canon), key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return out, tuple(str(n) for n in ordered)


# ----------------------------------------------------------- load balancers

LB_PROTOCOLS = ("tcp", "http")
LB_ALGORITHMS = ("roundrobin", "leastconn", "source")
LB_STICKINESS = ("none", "source", "cookie")
LB_CHECKS = ("tcp", "http", "none")
MAX_MEMBERS = 256
# What HAProxy's config parser takes literally (the router writes the path
# into haproxy.cfg): no quotes, backslashes, "#", "$" (environment
# variables) or spaces.
HTTP_PATH_RE = re.compile(r"/[A-Za-z0-9._~!&()*+,;=:@%/-]{0,199}")


@dataclasses.dataclass(frozen=True, slots=True)
class LbMemberSpec:
    port_id: str
    weight: int = 0
    private_port: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class LbHealthSpec:
    type: str = ""
    path: str = ""
    expect_status: int = 0
    interval_ms: int = 0
    rise: int = 0
    fall: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class LoadBalancerSpec:
    public_ip_id: str
    public_port: int
    protocol: str
    algorithm: str
    private_port: int
    members: tuple[LbMemberSpec, ...]
    stickiness: str
    health_check: LbHealthSpec
    source_cidrs: tuple[str, ...] = ()
    name: str = ""


def _choice(out: list[Violation], value: str, allowed: tuple[str, ...], default: str,
            field: str) -> str:
    v = value.lower() or default
    if v not in allowed:
        out.append(Violation(field, f"{show(value)} is not one of {', '.join(allowed)}"))
    return v


def check_load_balancer(spec: LoadBalancerSpec,
                        prefix: str = "load_balancer") -> LoadBalancerSpec:
    out: list[Violation] = []
    public_ip_id = _id(out, spec.public_ip_id, f"{prefix}.public_ip_id")
    _port(out, spec.public_port, f"{prefix}.public_port")
    private_port = spec.private_port or spec.public_port
    _port(out, private_port, f"{prefix}.private_port")
    proto = _choice(out, spec.protocol, LB_PROTOCOLS, "", f"{prefix}.protocol")
    algorithm = _choice(out, spec.algorithm, LB_ALGORITHMS, "roundrobin", f"{prefix}.algorithm")
    sticky = _choice(out, spec.stickiness, LB_STICKINESS, "none", f"{prefix}.stickiness")
    if sticky == "cookie" and proto != "http":
        out.append(Violation(f"{prefix}.stickiness", "cookie stickiness needs protocol http"))
    if spec.name:
        problem = free_text_problem(spec.name)
        if problem:
            out.append(Violation(f"{prefix}.name", problem))
    h = spec.health_check
    hp = f"{prefix}.health_check"
    htype = _choice(out, h.type, LB_CHECKS, "tcp", f"{hp}.type")
    path = h.path or "/"
    if htype == "http" and not HTTP_PATH_RE.fullmatch(path):
        out.append(Violation(f"{hp}.path", f"{show(h.path)} is not an HTTP path HAProxy "
                             "takes as it is: / then up to 199 of A-Z a-z 0-9 and "
                             "._~!&()*+,;=:@%/- (no quotes, $, #, \\ or spaces)"))
    if h.expect_status and not 100 <= h.expect_status <= 599:
        out.append(Violation(f"{hp}.expect_status", f"{h.expect_status} is not 100-599"))
    interval = h.interval_ms or 2000
    if not 100 <= interval <= 3_600_000:
        out.append(Violation(f"{hp}.interval_ms", f"{interval} is not 100-3600000"))
    rise, fall = h.rise or 2, h.fall or 3
    for name, v in (("rise", rise), ("fall", fall)):
        if not 1 <= v <= 100:
            out.append(Violation(f"{hp}.{name}", f"{v} is not 1-100"))
    members: list[LbMemberSpec] = []
    if len(spec.members) > MAX_MEMBERS:
        out.append(Violation(f"{prefix}.members", f"at most {MAX_MEMBERS} members"))
    seen: set[tuple[str, int]] = set()
    for i, m in enumerate(spec.members):
        mp = f"{prefix}.members[{i}]"
        port_id = _id(out, m.port_id, f"{mp}.port_id")
        weight = m.weight or 1
        if not 1 <= weight <= 256:
            out.append(Violation(f"{mp}.weight", f"{m.weight} is not 1-256"))
        mport = m.private_port or private_port
        _port(out, mport, f"{mp}.private_port")
        if (port_id, mport) in seen:
            out.append(Violation(mp, f"port {port_id}:{mport} is listed twice"))
        seen.add((port_id, mport))
        members.append(LbMemberSpec(port_id, weight, mport))
    problems, cidrs = cidrs_problems(spec.source_cidrs, f"{prefix}.source_cidrs")
    out += problems
    raise_if(out)
    return LoadBalancerSpec(
        public_ip_id, spec.public_port, proto, algorithm, private_port, tuple(members), sticky,
        LbHealthSpec(htype, path if htype == "http" else "", h.expect_status, interval, rise,
                     fall),
        cidrs, spec.name)
