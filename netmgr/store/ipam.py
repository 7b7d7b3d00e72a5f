"""Address management: VLAN IDs, public IPs, port IPs and MACs.

Every allocation runs inside the caller's write transaction and picks the
lowest free value (MACs: a random one). What makes this race-free is not the
reading but the unique constraints behind each value (see ``netmgr.store.tables.core``): a
concurrent writer that picked the same value fails on insert and the store
retries its whole transaction. On SQLite the writers are serialised anyway.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Iterable

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition, ResourceExhausted
from netmgr.model.core import Zone
from netmgr.model.vlans import private_gateway_range
from netmgr.store import concurrent_alloc
from netmgr.store.tables.core import MacRow, NetworkRow, PortRow, PublicIpRow
from netmgr.store.tables.redundancy import RouterRedundancyRow
from netmgr.store.tables.vpc import PrivateGatewayRow

MAC_ATTEMPTS = 32


def _lowest_free(candidates: Iterable[int], used: set[int]) -> int | None:
    return next((c for c in candidates if c not in used), None)


def allocate_vlan(session: Session, zone: Zone, skip_claimed: bool = False) -> int:
    """Lowest free VLAN of the zone; ``skip_claimed``: also not one a
    concurrent transaction is allocating (``concurrent_alloc``)."""
    # Reserved VLANs are outside a checked zone's range; skipped all the same
    # for a zone stored before they were checked.
    used = (set(session.scalars(select(NetworkRow.vlan_id))) | set(zone.reserved_vlans)
            | set(session.scalars(select(RouterRedundancyRow.sync_vlan))))
    candidates = range(zone.vlan_min, zone.vlan_max + 1)
    vlan = (concurrent_alloc.claim_vlan(session, (c for c in candidates if c not in used))
            if skip_claimed else _lowest_free(candidates, used))
    if vlan is None:
        raise ResourceExhausted(
            "zone.vlan", f"no free VLAN ID in the zone's range {zone.vlan_min}-{zone.vlan_max}"
        )
    return vlan


def allocate_private_gateway_vlan(session: Session, zone: Zone) -> int:
    """Lowest free VLAN of the zone's private gateway range (the unique
    constraint on the gateways' VLAN makes a lost race retry)."""
    pg_range = private_gateway_range(zone)
    if not pg_range:
        raise FailedPrecondition(
            "private_gateway.vlan_id: the zone has no private gateway VLAN range (the admin "
            "sets zone.private_gateway_vlan_min and _max)")
    used = (set(session.scalars(select(PrivateGatewayRow.vlan_id)))
            | set(session.scalars(select(NetworkRow.vlan_id))) | set(zone.reserved_vlans)
            | set(session.scalars(select(RouterRedundancyRow.sync_vlan))))
    vlan = _lowest_free(pg_range, used)
    if vlan is None:
        raise ResourceExhausted(
            "private_gateway.vlan_id", f"no free VLAN in the zone's private gateway range "
            f"{pg_range.start}-{pg_range.stop - 1}")
    return vlan


def allocate_public_ip(session: Session, zone: Zone, skip_claimed: bool = False) -> str:
    """Lowest free address of the zone's public pool (never its gateway);
    ``skip_claimed`` as for ``allocate_vlan``."""
    start = int(ipaddress.IPv4Address(zone.public_pool_start))
    end = int(ipaddress.IPv4Address(zone.public_pool_end))
    # Every public address of the zone, at every network create: parsed as
    # stored (dotted quads we wrote) at a tenth of ``ipaddress``'s cost.
    used = {int.from_bytes(socket.inet_aton(ip), "big")
            for ip in session.scalars(select(PublicIpRow.ip))}
    used.add(int(ipaddress.IPv4Address(zone.public_gateway)))
    candidates = range(start, end + 1)
    found = (concurrent_alloc.claim_public_ip(session, (c for c in candidates if c not in used))
             if skip_claimed else _lowest_free(candidates, used))
    if found is None:
        raise ResourceExhausted(
            "zone.public_pool",
            f"no free public address in the pool {zone.public_pool_start}-{zone.public_pool_end}",
        )
    return str(ipaddress.IPv4Address(found))


# Built once (a statement's cache key is computed once): every port create.
_PORT_IPS = select(PortRow.ip).where(PortRow.network_id == bindparam("network_id"))
_MAC = select(MacRow.mac).where(MacRow.mac == bindparam("mac"))


def allocate_port_ip(session: Session, network: NetworkRow) -> str:
    """Lowest free host address of the network (not network, broadcast, gateway)."""
    net = ipaddress.IPv4Network(network.cidr)
    used = {
        int(ipaddress.IPv4Address(ip))
        for ip in session.connection().scalars(  # Core: a port create's hot path
            _PORT_IPS, {"network_id": network.id})
    }
    used.add(int(ipaddress.IPv4Address(network.gateway)))
    hosts = range(int(net.network_address) + 1, int(net.broadcast_address))
    found = _lowest_free(hosts, used)
    if found is None:
        raise ResourceExhausted(
            "network.cidr", f"no free address left in network {network.id} ({network.cidr})"
        )
    return str(ipaddress.IPv4Address(found))


def ip_in_use(session: Session, network_id: str, ip: str) -> bool:
    stmt = select(PortRow.id).where(PortRow.network_id == network_id, PortRow.ip == ip)
    return session.connection().scalar(stmt) is not None


def random_mac() -> str:
    """A random locally administered unicast MAC (first octet 02)."""
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def allocate_mac(session: Session) -> str:
    """A random MAC not used by any port or router (and reserved here).

    The caller attaches the owner with ``claim_mac`` once the owner row exists
    in the same transaction; the MacRow primary key is the global guard.
    """
    for _ in range(MAC_ATTEMPTS):
        mac = random_mac()
        if not mac_in_use(session, mac):
            return mac
    raise ResourceExhausted("mac", "could not find a free MAC address")  # 2**40 space


def mac_in_use(session: Session, mac: str) -> bool:
    """In the database, in this transaction (a Core select, no ORM load: a
    MAC claimed in this session is flushed before anything asks again)."""
    return session.connection().scalar(_MAC, {"mac": mac}) is not None


def claim_mac(
    session: Session, mac: str, *, port_id: str | None = None, router_id: str | None = None,
    field: str = "port.mac", checked: bool = False,
) -> None:
    """``checked``: the caller has just seen the MAC free in this transaction."""
    if not checked and mac_in_use(session, mac):
        raise AlreadyExists(field, f"MAC address {mac} is already in use")
    session.add(MacRow(mac=mac, port_id=port_id, router_id=router_id))
