"""Domain objects of the edge services (frozen values, like ``netmgr.model.core``)."""

from __future__ import annotations

import dataclasses

from netmgr.model.core import Status, WithStatus


@dataclasses.dataclass(frozen=True, slots=True)
class PublicIp(WithStatus):
    status: Status
    ip: str
    network_id: str
    source_nat: bool


@dataclasses.dataclass(frozen=True, slots=True)
class StaticNat(WithStatus):
    status: Status
    network_id: str
    public_ip_id: str
    port_id: str
    public_ip: str
    private_ip: str


@dataclasses.dataclass(frozen=True, slots=True)
class PortForward(WithStatus):
    status: Status
    network_id: str
    public_ip_id: str
    protocol: str
    public_port: int
    public_port_end: int
    port_id: str
    private_port: int
    private_port_end: int
    source_cidrs: tuple[str, ...]
    public_ip: str
    private_ip: str


@dataclasses.dataclass(frozen=True, slots=True)
class FirewallRule(WithStatus):
    status: Status
    direction: str  # "ingress" | "egress"
    network_id: str
    public_ip_id: str
    protocol: str
    port: int
    port_end: int
    icmp_type: int
    icmp_code: int
    cidrs: tuple[str, ...]
    public_ip: str


# The kind an edge change names an ingress rule to routed and IPv6 guests by
# (an agent that does not know such rules answers its delta stale).
GUEST_INGRESS = "guest-ingress"
# The kind a port's guest metadata (user data, labels, key pair) is named by
# in an edge change; the change carries the committed port.
GUEST_METADATA = "guest-metadata"


def is_guest_ingress(r: FirewallRule) -> bool:
    """An ingress rule to guests' own addresses (no public IP)."""
    return r.direction == "ingress" and not r.public_ip_id


@dataclasses.dataclass(frozen=True, slots=True)
class LbMember:
    port_id: str
    weight: int
    private_port: int
    ip: str = ""  # "" when the port is gone
    health: str = ""
    last_check: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class LoadBalancer(WithStatus):
    status: Status
    network_id: str
    public_ip_id: str
    name: str
    public_ip: str
    public_port: int
    protocol: str
    algorithm: str
    private_port: int
    stickiness: str
    # type, path, expect_status, interval_ms, rise, fall
    health_check: tuple[str, str, int, int, int, int]
    members: tuple[LbMember, ...]
    source_cidrs: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class EgressPolicy:
    network_id: str
    default_deny: bool


@dataclasses.dataclass(frozen=True, slots=True)
class EdgeSnapshot:
    """The edge objects one router serves, read with its RouterSnapshot."""

    public_ips: tuple[PublicIp, ...] = ()
    static_nats: tuple[StaticNat, ...] = ()
    port_forwards: tuple[PortForward, ...] = ()
    firewall_rules: tuple[FirewallRule, ...] = ()
    egress_policies: tuple[EgressPolicy, ...] = ()
    load_balancers: tuple[LoadBalancer, ...] = ()
