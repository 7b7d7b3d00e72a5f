"""Validation of everything a user can type: pure functions, no database.

Each checker collects every bad field of a request as ``Violation``s (named
by request path, ``network.cidr``) and raises one ``InvalidArgument``, so a
caller learns all its mistakes at once. Values that come back are normalised
(canonical CIDR, lower-case MAC). Checks that need the store (overlap with
other networks, uniqueness) take what they compare against as arguments.

Nothing a user types may contain a newline or control character: these values
end up in dnsmasq and nftables files on the routers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from common.dhcp_options import DhcpOption
from common.grpc_errors import InvalidArgument, Violation
from common.request_checks import uuid_problem
from netmgr.model.core import AddressPair, BgpPeer, Ipv6Mode, Zone
from netmgr.model.field_rules import (
    DEFAULT_LEASE_SECONDS,
    MAX_DNS_SERVERS,
    MAX_DOMAIN_SEARCH,
    cidr_problem,
    device_id_problem,
    dns_name_problem,
    free_text_problem,
    gateway_problem,
    hostname_problem,
    ipv4_problem,
    lease_problem,
    mac_problem,
    mtu_problem,
    name_problem,
    show,
    tenant_name_problem,
    unicast_ipv4_problem,
)
from netmgr.model.ipv6_rules import (
    MAX_BGP_PEERS,
    asn_problem,
    ipv6_cidr_problem,
    ipv6_pool_problem,
    routed_pool_problem,
    unicast_ip_problem,
    unicast_ipv6_problem,
)
from netmgr.model.metadata import (
    RawDhcpOption,
    dhcp_options_checked,
    labels_problems,
    metadata_tokens_problem,
    user_data_problem,
)
from netmgr.model.vlans import zone_vlan_violations

# ------------------------------------------------------------------ inputs


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkSpec:
    name: str
    cidr: str
    gateway: str = ""
    domain: str = ""
    dns_servers: tuple[str, ...] = ()
    domain_search: tuple[str, ...] = ()
    mtu: int = 0
    lease_seconds: int = 0
    # A tier of this VPC (netmgr.store.vpcs) when set, and its ACL list.
    vpc_id: str = ""
    acl_id: str = ""
    # A shared network (admin only; checked by the store): who may use it,
    # and the provider VLAN it is on.
    shared: bool = False
    shared_tenant_ids: tuple[str, ...] = ()
    provider_vlan: int = 0
    # IPv6: the /64 ("" with a mode: allocated from the zone's pool) and how
    # guests get addresses; routed: no NAT, the CIDR from the routed pool.
    ipv6_cidr: str = ""
    ipv6_mode: str = ""
    routed: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkUpdate:
    """Only the fields that are not None change."""

    name: str | None = None
    dns_servers: tuple[str, ...] | None = None
    domain_search: tuple[str, ...] | None = None
    mtu: int | None = None
    lease_seconds: int | None = None
    # A shared network's tenants (admin only; empty: every tenant). The
    # store refuses to drop a tenant that still has ports there.
    shared_tenant_ids: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PortSpec:
    network_id: str
    name: str = ""
    mac: str = ""
    ip: str = ""
    hostname: str = ""
    device_id: str = ""
    # What the router's metadata service tells the guest (netmgr.model.metadata).
    user_data: bytes = b""
    labels: tuple[tuple[str, str], ...] = ()
    ssh_key_pair_id: str = ""
    # Checked by the store (netmgr.model.security_groups).
    security_group_ids: tuple[str, ...] = ()
    port_security: bool = True
    allowed_address_pairs: tuple[AddressPair, ...] = ()
    binding_host: str = ""
    # Stateful DHCPv6 networks only: the address asked for ("" allocated).
    ipv6: str = ""
    # "" reads as "optional".
    metadata_tokens: str = ""
    # As sent: (name, number, type, values); checked into DhcpOptions.
    dhcp_options: tuple[RawDhcpOption | DhcpOption, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class PortUpdate:
    name: str | None = None
    hostname: str | None = None
    device_id: str | None = None
    user_data: bytes | None = None
    labels: tuple[tuple[str, str], ...] | None = None
    # "" removes the key pair.
    ssh_key_pair_id: str | None = None
    security_group_ids: tuple[str, ...] | None = None
    port_security: bool | None = None
    allowed_address_pairs: tuple[AddressPair, ...] | None = None
    binding_host: str | None = None
    metadata_tokens: str | None = None
    dhcp_options: tuple[RawDhcpOption | DhcpOption, ...] | None = None


NETWORK_UPDATABLE = frozenset(f.name for f in dataclasses.fields(NetworkUpdate))
PORT_UPDATABLE = frozenset(f.name for f in dataclasses.fields(PortUpdate))
ZONE_UPDATABLE = frozenset(f.name for f in dataclasses.fields(Zone))


# ------------------------------------------------------------- primitives


def check_id(value: str, field: str = "id") -> str:
    """IDs are canonical (lower-case) UUID strings, and nothing else; returns it."""
    problem = uuid_problem(value)
    if problem is not None:
        raise InvalidArgument.one(field, problem)
    return value


def _collect(*checks: tuple[str, str | None]) -> list[Violation]:
    return [Violation(field, reason) for field, reason in checks if reason is not None]


def raise_if(violations: Sequence[Violation]) -> None:
    if violations:
        raise InvalidArgument(violations)


# ---------------------------------------------------------------- networks


def _list_problems(
    field: str, values: Sequence[str], limit: int, problem: Callable[[str], str | None]
) -> list[Violation]:
    out = []
    if len(values) > limit:
        out.append(Violation(field, f"at most {limit} entries"))
    for i, v in enumerate(values):
        reason = problem(v)
        if reason is not None:
            out.append(Violation(f"{field}[{i}]", reason))
    return out


def check_network_spec(spec: NetworkSpec, prefix: str = "network") -> NetworkSpec:
    """Everything that can be checked without the store; returns it normalised."""
    domain = spec.domain.lower()
    search = tuple(d.lower() for d in spec.domain_search)
    # A routed network without a CIDR gets one from the zone's routed pool.
    allocated_cidr = spec.routed and not spec.cidr
    v = _collect(
        (f"{prefix}.name", name_problem(spec.name)),
        (f"{prefix}.cidr", None if allocated_cidr else cidr_problem(spec.cidr)),
        (f"{prefix}.domain", dns_name_problem(domain) if domain else None),
        (f"{prefix}.mtu", mtu_problem(spec.mtu)),
        (f"{prefix}.lease_seconds", lease_problem(spec.lease_seconds)),
    )
    cidr_ok = not any(x.field == f"{prefix}.cidr" for x in v)
    if spec.gateway and cidr_ok:
        v += _collect((f"{prefix}.gateway", gateway_problem(spec.gateway, spec.cidr)))
    elif spec.gateway:
        v += _collect((f"{prefix}.gateway", ipv4_problem(spec.gateway)))
    v += _list_problems(f"{prefix}.dns_servers", spec.dns_servers, MAX_DNS_SERVERS,
                        unicast_ipv4_problem)
    v += _list_problems(f"{prefix}.domain_search", search, MAX_DOMAIN_SEARCH, dns_name_problem)
    vpc_id, acl_id = spec.vpc_id, spec.acl_id
    for field, value in (("vpc_id", vpc_id), ("acl_id", acl_id)):
        if value and (problem := uuid_problem(value)) is not None:
            v.append(Violation(f"{prefix}.{field}", problem))
    if acl_id and not vpc_id:
        v.append(Violation(f"{prefix}.acl_id", "only a VPC tier (vpc_id set) has an ACL list"))
    if spec.shared and vpc_id:
        v.append(Violation(f"{prefix}.shared", "a VPC tier is not shared"))
    if spec.shared and not spec.provider_vlan:
        v.append(Violation(f"{prefix}.provider_vlan", "a shared network names its VLAN"))
    if not spec.shared and (spec.provider_vlan or spec.shared_tenant_ids):
        v.append(Violation(f"{prefix}.shared", "provider_vlan and shared_tenant_ids are for "
                                               "shared networks"))
    v += shared_tenant_problems(spec.shared_tenant_ids, prefix)
    if spec.routed and vpc_id:
        v.append(Violation(f"{prefix}.routed",
                           "a VPC tier is not routed: its VPC's router translates it"))
    if spec.routed and spec.gateway and allocated_cidr:
        v.append(Violation(f"{prefix}.gateway", "a gateway needs the CIDR it is in"))
    mode, ipv6_cidr, ipv6_v = _ipv6_of(spec, prefix)
    v += ipv6_v
    raise_if(v)
    return dataclasses.replace(
        spec,
        vpc_id=vpc_id,
        acl_id=acl_id,
        ipv6_cidr=ipv6_cidr,
        ipv6_mode=mode,
        cidr="" if allocated_cidr else str(ipaddress.IPv4Network(spec.cidr)),
        domain=domain,
        domain_search=search,
        lease_seconds=spec.lease_seconds or DEFAULT_LEASE_SECONDS,
    )


IPV6_MODES = tuple(m.value for m in Ipv6Mode if m is not Ipv6Mode.NONE)


def _ipv6_of(spec: NetworkSpec, prefix: str) -> tuple[str, str, list[Violation]]:
    """The mode (SLAAC when only a /64 is given) and the canonical /64."""
    v: list[Violation] = []
    mode = spec.ipv6_mode
    if mode and mode not in IPV6_MODES:
        v.append(Violation(f"{prefix}.ipv6_mode",
                           f"{show(mode)} is not one of {', '.join(IPV6_MODES)}"))
    cidr = ""
    if spec.ipv6_cidr:
        problem = ipv6_cidr_problem(spec.ipv6_cidr)
        if problem is not None:
            v.append(Violation(f"{prefix}.ipv6_cidr", problem))
        else:
            cidr = str(ipaddress.IPv6Network(spec.ipv6_cidr))
        mode = mode or Ipv6Mode.SLAAC.value
    return mode, cidr, v


def dns_label_from(text: str, fallback: str) -> str:
    """Lower-case ``text`` and turn anything a DNS label may not hold into '-'."""
    label = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:63].strip("-")
    return label or fallback


def with_network_defaults(spec: NetworkSpec, tenant_name: str, zone: Zone) -> NetworkSpec:
    """Gateway: the first host; domain: <network>.<tenant>.<zone suffix>."""
    net = ipaddress.IPv4Network(spec.cidr)
    if spec.gateway and (p := gateway_problem(spec.gateway, spec.cidr)) is not None:
        raise InvalidArgument.one("network.gateway", p)  # a routed network's, given late
    gateway = spec.gateway or str(net.network_address + 1)
    domain = spec.domain
    if not domain:
        domain = ".".join(
            (dns_label_from(spec.name, "net"), dns_label_from(tenant_name, "tenant"),
             zone.domain_suffix)
        )
        if (p := dns_name_problem(domain)) is not None:
            raise InvalidArgument.one("network.domain", f"the default domain is invalid: {p}")
    return dataclasses.replace(spec, gateway=gateway, domain=domain)


class PlacedNetwork(Protocol):
    """What the overlap check reads of another network: a ``Network``, or a
    row of just these columns (the store reads no more for every create)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def cidr(self) -> str: ...


def _ipv4_span(cidr: str) -> tuple[int, int]:
    """The first and last address of a stored (valid) IPv4 CIDR, as integers:
    a tenant's every network is compared on each create, and
    ``ipaddress.IPv4Network`` costs ten times more per network."""
    address, _, length = cidr.partition("/")
    host_bits = 32 - int(length)
    first = int.from_bytes(socket.inet_aton(address), "big") >> host_bits << host_bits
    return first, first + (1 << host_bits) - 1


def check_network_placement(
    cidr: str, zone: Zone, others: Iterable[PlacedNetwork], field: str = "network.cidr"
) -> list[Violation]:
    """The CIDR must not overlap the provider network or another of the tenant's networks."""
    net = ipaddress.IPv4Network(cidr)
    if net.overlaps(ipaddress.IPv4Network(zone.public_cidr)):
        return [Violation(field, f"{cidr} overlaps the zone's public network {zone.public_cidr}")]
    first, last = int(net.network_address), int(net.broadcast_address)
    for other in others:
        other_first, other_last = _ipv4_span(other.cidr)
        if other_first <= last and first <= other_last:
            return [Violation(
                field, f"{cidr} overlaps network {other.name!r} ({other.id}, {other.cidr})"
            )]
    return []


MAX_SHARED_TENANTS = 256


def shared_tenant_problems(ids: Sequence[str], prefix: str) -> list[Violation]:
    if len(ids) > MAX_SHARED_TENANTS:
        return [Violation(f"{prefix}.shared_tenant_ids",
                          f"{len(ids)} tenants (at most {MAX_SHARED_TENANTS}; none: every tenant)")]
    v = []
    for i, tid in enumerate(ids):
        if (problem := uuid_problem(tid)) is not None:
            v.append(Violation(f"{prefix}.shared_tenant_ids[{i}]", problem))
        elif tid in ids[:i]:
            v.append(Violation(f"{prefix}.shared_tenant_ids[{i}]", "is listed twice"))
    return v


def check_network_update(upd: NetworkUpdate, prefix: str = "network") -> NetworkUpdate:
    v = _collect(
        (f"{prefix}.name", name_problem(upd.name) if upd.name is not None else None),
        (f"{prefix}.mtu", mtu_problem(upd.mtu) if upd.mtu is not None else None),
        (f"{prefix}.lease_seconds",
         lease_problem(upd.lease_seconds) if upd.lease_seconds is not None else None),
    )
    search = None
    if upd.dns_servers is not None:
        v += _list_problems(f"{prefix}.dns_servers", upd.dns_servers, MAX_DNS_SERVERS,
                            unicast_ipv4_problem)
    if upd.domain_search is not None:
        search = tuple(d.lower() for d in upd.domain_search)
        v += _list_problems(f"{prefix}.domain_search", search, MAX_DOMAIN_SEARCH,
                            dns_name_problem)
    if upd.shared_tenant_ids is not None:
        v += shared_tenant_problems(upd.shared_tenant_ids, prefix)
    raise_if(v)
    lease = upd.lease_seconds
    return dataclasses.replace(
        upd,
        domain_search=search,
        lease_seconds=(lease or DEFAULT_LEASE_SECONDS) if lease is not None else None,
    )


# ------------------------------------------------------------------- ports


def check_port_spec(spec: PortSpec, prefix: str = "port") -> PortSpec:
    mac = spec.mac.lower()
    hostname = spec.hostname.lower()
    v = _collect(
        (f"{prefix}.name", free_text_problem(spec.name)),
        (f"{prefix}.mac", mac_problem(mac) if mac else None),
        (f"{prefix}.ip", ipv4_problem(spec.ip) if spec.ip else None),
        (f"{prefix}.ipv6", unicast_ipv6_problem(spec.ipv6) if spec.ipv6 else None),
        (f"{prefix}.hostname", hostname_problem(hostname) if spec.hostname else None),
        (f"{prefix}.device_id", device_id_problem(spec.device_id)),
        (f"{prefix}.user_data", user_data_problem(spec.user_data)),
        (f"{prefix}.metadata_tokens", metadata_tokens_problem(spec.metadata_tokens)),
    )
    v += labels_problems(dict(spec.labels), f"{prefix}.labels")
    options = dhcp_options_checked(spec.dhcp_options, f"{prefix}.dhcp_options", v)
    key_pair_id = _optional_id(spec.ssh_key_pair_id, f"{prefix}.ssh_key_pair_id", v)
    try:
        network_id = check_id(spec.network_id, f"{prefix}.network_id")
    except InvalidArgument as e:
        v += e.violations
        network_id = spec.network_id
    raise_if(v)
    ipv6 = str(ipaddress.IPv6Address(spec.ipv6)) if spec.ipv6 else ""
    return dataclasses.replace(spec, network_id=network_id, mac=mac, hostname=hostname,
                               ssh_key_pair_id=key_pair_id, ipv6=ipv6,
                               metadata_tokens=spec.metadata_tokens or "optional",
                               dhcp_options=options)


def _optional_id(value: str, field: str, v: list[Violation]) -> str:
    if not value:
        return ""
    try:
        return check_id(value, field)
    except InvalidArgument as e:
        v += e.violations
        return value


def default_hostname(port_name: str, ip: str) -> str:
    """The port name if it is a valid host name, else host-<ip with dashes>."""
    if port_name and hostname_problem(port_name) is None:
        return port_name.lower()
    return "host-" + ip.replace(".", "-")


def check_port_update(upd: PortUpdate, prefix: str = "port") -> PortUpdate:
    hostname = upd.hostname.lower() if upd.hostname is not None else None
    v = _collect(
        (f"{prefix}.name", free_text_problem(upd.name) if upd.name is not None else None),
        (f"{prefix}.hostname", hostname_problem(hostname) if hostname is not None else None),
        (f"{prefix}.device_id",
         device_id_problem(upd.device_id) if upd.device_id is not None else None),
        (f"{prefix}.user_data",
         user_data_problem(upd.user_data) if upd.user_data is not None else None),
        (f"{prefix}.metadata_tokens", metadata_tokens_problem(upd.metadata_tokens)
         if upd.metadata_tokens is not None else None),
    )
    if upd.labels is not None:
        v += labels_problems(dict(upd.labels), f"{prefix}.labels")
    options = (dhcp_options_checked(upd.dhcp_options, f"{prefix}.dhcp_options", v)
               if upd.dhcp_options is not None else None)
    key_pair_id = upd.ssh_key_pair_id
    if key_pair_id is not None:
        key_pair_id = _optional_id(key_pair_id, f"{prefix}.ssh_key_pair_id", v)
    raise_if(v)
    return dataclasses.replace(upd, hostname=hostname, ssh_key_pair_id=key_pair_id,
                               dhcp_options=options)


# ------------------------------------------------------------ tenants, zone


def check_tenant_name(name: str, field: str = "name") -> str:
    raise_if(_collect((field, tenant_name_problem(name))))
    return name


def check_token_name(name: str, field: str = "name") -> str:
    raise_if(_collect((field, free_text_problem(name))))
    return name


def check_zone(zone: Zone, prefix: str = "zone") -> Zone:
    """A whole zone (after an update is merged in)."""
    v = _collect(
        (f"{prefix}.name", name_problem(zone.name)),
        (f"{prefix}.domain_suffix", dns_name_problem(zone.domain_suffix.lower())),
    )
    try:
        public = ipaddress.IPv4Network(zone.public_cidr, strict=True)
    except ValueError:
        v.append(Violation(f"{prefix}.public_cidr",
                           f"{show(zone.public_cidr)} is not a valid IPv4 CIDR"))
        public = None
    if public is not None:
        gw_problem = gateway_problem(zone.public_gateway, zone.public_cidr)
        v += _collect((f"{prefix}.public_gateway", gw_problem))
        for fld in ("public_pool_start", "public_pool_end"):
            value = getattr(zone, fld)
            p = gateway_problem(value, zone.public_cidr)  # same rule: a host of the CIDR
            v += _collect((f"{prefix}.{fld}", p))
        if not any(x.field.startswith(f"{prefix}.public_pool") for x in v) and (
            ipaddress.IPv4Address(zone.public_pool_start)
            > ipaddress.IPv4Address(zone.public_pool_end)
        ):
            v.append(Violation(f"{prefix}.public_pool_end", "the pool ends before it starts"))
    v += zone_vlan_violations(zone, prefix)
    v += _list_problems(f"{prefix}.upstream_dns", zone.upstream_dns, MAX_DNS_SERVERS,
                        unicast_ipv4_problem)
    v += zone_routing_violations(zone, prefix)
    raise_if(v)
    return dataclasses.replace(
        zone, public_cidr=str(public), domain_suffix=zone.domain_suffix.lower(),
        reserved_vlans=tuple(sorted(set(zone.reserved_vlans))),
        ipv6_pool=_canonical(zone.ipv6_pool), routed_pool=_canonical(zone.routed_pool),
        public_cidr6=_canonical(zone.public_cidr6),
        public_gateway6=(str(ipaddress.IPv6Address(zone.public_gateway6))
                         if zone.public_gateway6 else ""),
        bgp_peers=tuple(BgpPeer(str(ipaddress.ip_address(p.address)), p.asn)
                        for p in zone.bgp_peers),
    )


def _canonical(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr)) if cidr else ""


def zone_routing_violations(zone: Zone, prefix: str = "zone") -> list[Violation]:
    """The IPv6 pool, the routed pool, the provider's IPv6 /64 and its
    gateway (both or neither), the ASN and the peers (each of a family the
    provider network has: IPv4 always, IPv6 with public_cidr6)."""
    v = _collect(
        (f"{prefix}.ipv6_pool", ipv6_pool_problem(zone.ipv6_pool) if zone.ipv6_pool else None),
        (f"{prefix}.routed_pool",
         routed_pool_problem(zone.routed_pool) if zone.routed_pool else None),
        (f"{prefix}.public_cidr6",
         ipv6_cidr_problem(zone.public_cidr6) if zone.public_cidr6 else None),
        (f"{prefix}.bgp_asn", asn_problem(zone.bgp_asn) if zone.bgp_asn else None),
    )
    if bool(zone.public_cidr6) != bool(zone.public_gateway6):
        field = "public_gateway6" if zone.public_cidr6 else "public_cidr6"
        v.append(Violation(f"{prefix}.{field}",
                           "the provider's IPv6 /64 and its gateway go together"))
    elif zone.public_gateway6:
        p = unicast_ipv6_problem(zone.public_gateway6)
        if p is None and not any(x.field == f"{prefix}.public_cidr6" for x in v) and (
                ipaddress.IPv6Address(zone.public_gateway6)
                not in ipaddress.IPv6Network(zone.public_cidr6)):
            p = f"{zone.public_gateway6} is not inside {zone.public_cidr6}"
        v += _collect((f"{prefix}.public_gateway6", p))
    if zone.bgp_peers and not zone.bgp_asn:
        v.append(Violation(f"{prefix}.bgp_asn", "BGP peers need the zone's ASN"))
    if len(zone.bgp_peers) > MAX_BGP_PEERS:
        v.append(Violation(f"{prefix}.bgp_peers", f"at most {MAX_BGP_PEERS} peers"))
    for i, peer in enumerate(zone.bgp_peers):
        field = f"{prefix}.bgp_peers[{i}]"
        p = unicast_ip_problem(peer.address)
        if p is None:
            v += _peer_family_violations(zone, peer, field)
        v += _collect((f"{field}.address", p), (f"{field}.asn", asn_problem(peer.asn)))
    return v


def _peer_family_violations(zone: Zone, peer: BgpPeer, field: str) -> list[Violation]:
    addr = ipaddress.ip_address(peer.address)
    if addr.version == 6 and not zone.public_cidr6:
        return [Violation(f"{field}.address",
                          f"{peer.address} is IPv6; the provider network has no IPv6 "
                          "(zone.public_cidr6)")]
    if addr.version == 6 and ipv6_cidr_problem(zone.public_cidr6) is None and (
            addr not in ipaddress.IPv6Network(zone.public_cidr6)):
        return [Violation(f"{field}.address",
                          f"{peer.address} is not on the provider network {zone.public_cidr6}")]
    try:
        public = ipaddress.IPv4Network(zone.public_cidr)
    except ValueError:
        return []
    if addr.version == 4 and addr not in public:
        return [Violation(f"{field}.address",
                          f"{peer.address} is not on the provider network {zone.public_cidr}")]
    return []


# ------------------------------------------------------------- field masks


def resolve_update_mask(
    paths: Sequence[str], updatable: frozenset[str], present: Iterable[str]
) -> frozenset[str]:
    """The fields an Update changes: the mask's paths, or (empty mask) every
    updatable field set in the message. Unknown or immutable paths are refused."""
    if not paths:
        return frozenset(p for p in present if p in updatable)
    bad = [p for p in paths if p not in updatable]
    if bad:
        raise InvalidArgument.one(
            "update_mask",
            f"{', '.join(show(p) for p in bad)} cannot be updated "
            f"(updatable: {', '.join(sorted(updatable))})",
        )
    return frozenset(paths)
