"""Domain objects of the network manager.

Frozen, typed values: the store returns them, the API servicers turn them
into protobuf messages, and the reconciler's config builder (a pure function)
turns them into a router's desired state. Nothing here touches a database or
the network.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

from common.dhcp_options import DhcpOption

if TYPE_CHECKING:
    from netmgr.model.dns import DnsRecord
    from netmgr.model.edge import EdgeSnapshot
    from netmgr.model.vpc import VpcSnapshot
    from netmgr.model.vpn import VpnTunnel


class RouterBackend(StrEnum):
    NETNS = "netns"
    VM = "vm"


class RouterState(StrEnum):
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"


class ObjectState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    ERROR = "error"


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """The status envelope of a tenant object a router serves (a port, an edge
    rule, an ACL rule, a static route or private gateway, a VPN gateway or
    connection): which object and whose, the router generation that last
    changed it, and what the router made of it (its error, and the ``state``
    derived against the generation the router has applied)."""

    id: str
    tenant_id: str
    generation: int
    error: str
    created_at: dt.datetime | None  # None: the built-in ACL rules, never stored
    state: ObjectState = ObjectState.PENDING
    applied_generation: int = 0


class WithStatus:
    """An object composed with a ``Status``, read as its own attributes
    (``rule.id``, ``rule.state``); the envelope is built once, by the store."""

    __slots__ = ()
    status: Status

    @property
    def id(self) -> str:
        return self.status.id

    @property
    def tenant_id(self) -> str:
        return self.status.tenant_id

    @property
    def generation(self) -> int:
        return self.status.generation

    @property
    def error(self) -> str:
        return self.status.error

    @property
    def created_at(self) -> dt.datetime | None:
        return self.status.created_at

    @property
    def state(self) -> ObjectState:
        return self.status.state

    @property
    def applied_generation(self) -> int:
        return self.status.applied_generation


@dataclasses.dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    id: str
    tenant_id: str
    name: str
    created_at: dt.datetime
    # None: never expires.
    expires_at: dt.datetime | None = None
    # Only calls that change nothing (Get, List, Watch, WhoAmI).
    read_only: bool = False


class Ipv6Mode(StrEnum):
    """How a network's guests get their IPv6 address ("" : no IPv6)."""

    NONE = ""
    SLAAC = "slaac"
    DHCPV6_STATELESS = "dhcpv6_stateless"
    DHCPV6_STATEFUL = "dhcpv6_stateful"


@dataclasses.dataclass(frozen=True, slots=True)
class BgpPeer:
    """An upstream BGP speaker of the zone (the provider edge)."""

    address: str
    asn: int


@dataclasses.dataclass(frozen=True, slots=True)
class Zone:
    name: str
    public_cidr: str
    public_gateway: str
    public_pool_start: str
    public_pool_end: str
    vlan_min: int
    vlan_max: int
    upstream_dns: tuple[str, ...]
    domain_suffix: str
    # Private gateways' VLANs are allocated from here (0, 0: none).
    private_gateway_vlan_min: int = 0
    private_gateway_vlan_max: int = 0
    # VLANs the fabric keeps for itself: the provider segment, the router-VM
    # control network. Neither networks nor private gateways get one.
    reserved_vlans: tuple[int, ...] = (4000, 4001)
    # IPv6 and routed networks (docs/ipv6-and-bgp.md): the pool of the
    # networks' /64s, the pool of routed IPv4 CIDRs, the provider network's
    # IPv6 /64 and the edge's address on it, the routers' ASN and peers.
    ipv6_pool: str = ""
    routed_pool: str = ""
    public_cidr6: str = ""
    public_gateway6: str = ""
    bgp_asn: int = 0
    bgp_peers: tuple[BgpPeer, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Network:
    id: str
    tenant_id: str
    name: str
    cidr: str
    gateway: str
    domain: str
    dns_servers: tuple[str, ...]
    domain_search: tuple[str, ...]
    mtu: int
    lease_seconds: int
    vlan_id: int
    source_nat_ip: str
    router_id: str
    created_at: dt.datetime
    # A VPC tier: its VPC, and the MAC of the VPC router's interface on it.
    vpc_id: str = ""
    router_mac: str = ""
    # A tier's network ACL list (default_allow's ID when none was chosen).
    acl_id: str = ""
    # A shared network: the tenants that may put ports on it (() for all).
    shared: bool = False
    shared_tenant_ids: tuple[str, ...] = ()
    # IPv6 (a /64, "" for none), the router's address on it, the mode; routed
    # IPv4 (no source NAT, the CIDR from the zone's routed pool).
    ipv6_cidr: str = ""
    ipv6_gateway: str = ""
    ipv6_mode: Ipv6Mode = Ipv6Mode.NONE
    routed: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class AddressPair:
    """An address a port may send from besides its own (netmgr.model.security_groups)."""

    ip: str  # an address or a CIDR (normalised: a single address has no prefix)
    mac: str = ""  # "" for the port's own MAC


@dataclasses.dataclass(frozen=True, slots=True)
class Port(WithStatus):
    # Its generation is the router generation that last changed the port: the
    # port is ACTIVE once the router has applied at least that generation.
    status: Status
    network_id: str
    name: str
    mac: str
    ip: str
    hostname: str
    device_id: str
    # Derived when read: the router serving the port.
    router_id: str = ""
    # <hostname>.<network domain>
    fqdn: str = ""
    # What the router's metadata service tells the guest (netmgr.model.metadata).
    user_data: bytes = b""
    labels: tuple[tuple[str, str], ...] = ()
    ssh_key_pair_id: str = ""
    # Security (netmgr.model.security_groups): the groups named (empty: the
    # tenant's default group), port security, extra source addresses.
    security_group_ids: tuple[str, ...] = ()
    port_security: bool = True
    allowed_address_pairs: tuple[AddressPair, ...] = ()
    # The compute host the port's NIC is plugged on ("": not bound).
    binding_host: str = ""
    # Stateful DHCPv6: the allocated address; SLAAC and stateless: the
    # EUI-64 address of the MAC in the network's /64 (derived when read).
    ipv6: str = ""
    # IMDSv2 session tokens: "optional" or "required".
    metadata_tokens: str = "optional"
    # DHCP options only this port's guest gets.
    dhcp_options: tuple[DhcpOption, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceHealth:
    name: str
    healthy: bool
    detail: str = ""
    version: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class RouterReport:
    """What a router's agent reported, as the store records it."""

    router_id: str
    applied_generation: int
    services: tuple[ServiceHealth, ...]
    last_error: str
    port_errors: Mapping[str, str]
    reachable: bool = True
    # DNS record ID -> why the router refused it.
    record_errors: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Router:
    id: str
    tenant_id: str
    network_id: str
    backend: RouterBackend
    host: str
    # Bumped in the same transaction as every change to what the router serves.
    desired_generation: int
    applied_generation: int
    # MACs are allocated once and kept, so a rebuilt router looks the same to
    # guests and switches.
    public_mac: str
    guest_mac: str
    services: tuple[ServiceHealth, ...]
    last_error: str
    reachable: bool
    updated_at: dt.datetime
    # The router's public address (its network's or VPC's source-NAT IP).
    public_ip: str = ""
    # A VPC's router serves the VPC's tiers (network_id is then "").
    vpc_id: str = ""

    @property
    def state(self) -> RouterState:
        """What the API shows: derived from reachability, generations and health."""
        if not self.reachable:
            return RouterState.UNREACHABLE
        if self.last_error:
            # A rejected push keeps applied < desired; say why, not "provisioning".
            return RouterState.DEGRADED
        if self.applied_generation < self.desired_generation:
            return RouterState.PROVISIONING
        if any(not s.healthy for s in self.services):
            return RouterState.DEGRADED
        return RouterState.ACTIVE


@dataclasses.dataclass(frozen=True, slots=True)
class PlacedRouter:
    """Where a router runs and the generation it should run: all a resync
    compares with what the agents hold."""

    id: str
    host: str
    backend: RouterBackend
    desired_generation: int


def object_state(generation: int, error: str, applied_generation: int) -> ObjectState:
    """State of an object the router serves (a port, later rules): ERROR wins,
    then ACTIVE once the router applied the generation that last changed it."""
    if error:
        return ObjectState.ERROR
    if applied_generation >= generation:
        return ObjectState.ACTIVE
    return ObjectState.PENDING


@dataclasses.dataclass(frozen=True, slots=True)
class RouterSnapshot:
    """Everything one router serves, read in one transaction so that it is
    consistent with ``router.desired_generation``."""

    router: Router
    networks: tuple[Network, ...]
    ports: tuple[Port, ...]
    zone: Zone
    # Public IPs, static NAT, port forwards, firewall (netmgr.model.edge).
    edge: EdgeSnapshot | None = None
    # The VPC a VPC router serves, its ACLs and routes (netmgr.model.vpc).
    vpc: VpcSnapshot | None = None
    # Site-to-site VPN connections (netmgr.model.vpn.VpnTunnel).
    vpn: tuple[VpnTunnel, ...] = ()
    # port ID -> (name, OpenSSH public key "<type> <base64>") of its key pair.
    ssh_keys: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    # DNS records of its networks (netmgr.model.dns.DnsRecord).
    dns_records: tuple[DnsRecord, ...] = ()
