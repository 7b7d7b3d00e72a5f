"""Address management for IPv6 and routed networks: a network's /64 from
the zone's IPv6 pool, a routed network's CIDR from the zone's routed pool,
a port's IPv6 address.

Like ``netmgr.store.ipam``: inside the caller's write transaction, the lowest
free value, with a unique index behind each (networks.ipv6_cidr, the port's
(network, ipv6)) so a lost race retries. A /64 and a routed CIDR are unique
in the whole zone, not per tenant: both are routed to the router by the edge.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from netmgr.model.core import Ipv6Mode, Zone
from netmgr.model.ipv6_rules import IPV6_PREFIX, ROUTED_DEFAULT_PREFIX, eui64, ipv6_gateway
from netmgr.model.validation import NetworkSpec
from netmgr.store.tables.core import NetworkRow, PortRow

# Stateful DHCPv6 reservations start here in the /64 (below: the router and
# addresses an operator may want to keep).
STATEFUL_FIRST = 0x100
# A pool holds up to 2**(64-20) /64s: allocation walks past used ones only.
_SCAN_LIMIT = 1 << 20


def network_ipv6(s: Session, zone: Zone, spec: NetworkSpec) -> tuple[str | None, str]:
    """The network's /64 and mode (None, "": no IPv6): the one given (not in
    use, not the provider's) or the lowest free /64 of the zone's pool."""
    if not spec.ipv6_mode:
        return None, ""
    used = {c for c in s.scalars(select(NetworkRow.ipv6_cidr)) if c}
    if spec.ipv6_cidr:
        given = ipaddress.IPv6Network(spec.ipv6_cidr)
        if zone.public_cidr6 and given.overlaps(ipaddress.IPv6Network(zone.public_cidr6)):
            raise InvalidArgument.one("network.ipv6_cidr",
                                      f"{given} is the provider network's /64")
        if spec.ipv6_cidr in used:
            raise AlreadyExists("network.ipv6_cidr", f"{given} is already used by a network")
        return spec.ipv6_cidr, spec.ipv6_mode
    if not zone.ipv6_pool:
        raise FailedPrecondition("network.ipv6_cidr: the zone has no IPv6 pool (zone.ipv6_pool);"
                                 " name the network's /64")
    pool = ipaddress.IPv6Network(zone.ipv6_pool)
    public = ipaddress.IPv6Network(zone.public_cidr6) if zone.public_cidr6 else None
    for i, net in enumerate(pool.subnets(new_prefix=IPV6_PREFIX)):
        if i >= _SCAN_LIMIT:
            break
        if str(net) not in used and (public is None or not net.overlaps(public)):
            return str(net), spec.ipv6_mode
    raise ResourceExhausted("zone.ipv6_pool", f"no free /64 left in {zone.ipv6_pool}")


def routed_cidr(s: Session, zone: Zone, spec: NetworkSpec) -> str:
    """A routed network's CIDR: the one given (inside the routed pool, not
    overlapping another routed network) or the lowest free /24 of the pool."""
    if not zone.routed_pool:
        raise FailedPrecondition("network.routed: the zone has no routed pool "
                                 "(zone.routed_pool)")
    pool = ipaddress.IPv4Network(zone.routed_pool)
    taken = [ipaddress.IPv4Network(c) for c in s.scalars(
        select(NetworkRow.cidr).where(NetworkRow.routed.is_(True)))]
    if spec.cidr:
        net = ipaddress.IPv4Network(spec.cidr)
        if not net.subnet_of(pool):
            raise InvalidArgument.one("network.cidr",
                                      f"{net} is outside the zone's routed pool {pool}")
        if any(net.overlaps(t) for t in taken):
            raise AlreadyExists("network.cidr", f"{net} overlaps another routed network")
        return spec.cidr
    prefix = max(ROUTED_DEFAULT_PREFIX, pool.prefixlen)
    for net in pool.subnets(new_prefix=prefix):
        if not any(net.overlaps(t) for t in taken):
            return str(net)
    raise ResourceExhausted("zone.routed_pool", f"no free /{prefix} left in {pool}")


def port_ipv6(s: Session, net: NetworkRow, mac: str, requested: str) -> str | None:
    """A port's IPv6 address: the stateful reservation (requested or the
    lowest free from ::100), or the EUI-64 address of its MAC otherwise."""
    if not net.ipv6_cidr:
        if requested:
            raise InvalidArgument.one("port.ipv6", f"network {net.id} has no IPv6")
        return None
    if net.ipv6_mode != Ipv6Mode.DHCPV6_STATEFUL.value:
        if requested:
            raise InvalidArgument.one(
                "port.ipv6", f"network {net.id} is {net.ipv6_mode}: its guests form their "
                "own address (only dhcpv6_stateful takes a given one)")
        return eui64(mac, net.ipv6_cidr)
    prefix = ipaddress.IPv6Network(net.ipv6_cidr)
    gateway = ipaddress.IPv6Address(ipv6_gateway(net.ipv6_cidr))
    used = {ipaddress.IPv6Address(a) for a in s.scalars(
        select(PortRow.ipv6).where(PortRow.network_id == net.id)) if a}
    if requested:
        addr = ipaddress.IPv6Address(requested)
        if addr not in prefix:
            raise InvalidArgument.one("port.ipv6", f"{addr} is not inside {prefix}")
        if addr in (prefix.network_address, gateway):
            raise InvalidArgument.one("port.ipv6", f"{addr} is the router's or the subnet's")
        if addr in used:
            raise AlreadyExists("port.ipv6", f"{addr} is already in use in network {net.id}")
        return str(addr)
    candidate = prefix.network_address + STATEFUL_FIRST
    while candidate in used:
        candidate += 1
    return str(candidate)
