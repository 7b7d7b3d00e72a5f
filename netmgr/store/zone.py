"""The zone in the store: one row, filled from the server's defaults the
first time the store opens, changed by the admin afterwards.

A change must fit what is in use (VLANs, public addresses, networks), and a
change of what every router serves (public network, gateway, upstream DNS)
bumps every router's generation.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import FailedPrecondition
from netmgr.model import core as model
from netmgr.model.validation import check_zone
from netmgr.store import rows, shared
from netmgr.store.base import Database
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import NetworkRow, PublicIpRow, RouterRow, ZoneRow
from netmgr.store.tables.vpc import PrivateGatewayRow

# Zone fields whose change alters what every router serves.
ZONE_FIELDS_ROUTERS_SERVE = ("public_cidr", "public_gateway", "upstream_dns", "public_cidr6",
                             "public_gateway6", "bgp_asn", "bgp_peers")


def zone_columns(zone: model.Zone) -> dict[str, Any]:
    cols = dataclasses.asdict(zone)
    cols["upstream_dns"] = list(zone.upstream_dns)
    cols["reserved_vlans"] = list(zone.reserved_vlans)
    cols["bgp_peers"] = [{"address": p.address, "asn": p.asn} for p in zone.bgp_peers]
    return cols


class ZoneStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure(self, defaults: model.Zone) -> None:
        """Create the zone from ``defaults`` unless it exists."""
        defaults = check_zone(defaults)

        def tx(s: Session) -> None:
            if s.get(ZoneRow, shared.ZONE_ROW_ID) is None:
                s.add(ZoneRow(id=shared.ZONE_ROW_ID, updated_at=utcnow(),
                              **zone_columns(defaults)))

        self._db.write(tx)

    def get_zone(self) -> model.Zone:
        return self._db.read(lambda s: rows.zone(shared.zone_row(s)))

    def update_zone(self, changes: Mapping[str, Any]) -> tuple[model.Zone, tuple[str, ...]]:
        """Apply ``changes`` (Zone field -> value). Returns the zone and the
        routers whose generation was bumped (to notify after commit)."""

        def tx(s: Session) -> tuple[model.Zone, tuple[str, ...]]:
            row = shared.zone_row(s, lock=True)
            old = rows.zone(row)
            new = check_zone(dataclasses.replace(old, **changes))
            _check_zone_in_use(s, new)
            for key, value in zone_columns(new).items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            bumped: tuple[str, ...] = ()
            if any(getattr(old, f) != getattr(new, f) for f in ZONE_FIELDS_ROUTERS_SERVE):
                bumped = tuple(s.scalars(select(RouterRow.id)))
                for router_id in bumped:
                    shared.bump(s, router_id)
            return new, bumped

        return self._db.write(tx)


def _check_zone_in_use(s: Session, zone: model.Zone) -> None:
    out = sorted(v for v in s.scalars(select(NetworkRow.vlan_id))
                 if not zone.vlan_min <= v <= zone.vlan_max)
    if out:
        raise FailedPrecondition(
            f"zone.vlan_min: VLAN IDs in use fall outside {zone.vlan_min}-{zone.vlan_max}: "
            f"{', '.join(map(str, out[:5]))}")
    # A private gateway keeps its VLAN: neither the guest range nor the
    # reserved VLANs may come to cover it (a range shrunk away from one is fine).
    pg = sorted(v for v in s.scalars(select(PrivateGatewayRow.vlan_id))
                if zone.vlan_min <= v <= zone.vlan_max or v in zone.reserved_vlans)
    if pg:
        raise FailedPrecondition(
            f"zone.reserved_vlans: private gateways use VLAN {', '.join(map(str, pg[:5]))}, "
            f"which the guest range {zone.vlan_min}-{zone.vlan_max} or the reserved VLANs "
            "would cover")
    start = ipaddress.IPv4Address(zone.public_pool_start)
    end = ipaddress.IPv4Address(zone.public_pool_end)
    ips = [ip for ip in s.scalars(select(PublicIpRow.ip))
           if not start <= ipaddress.IPv4Address(ip) <= end]
    if ips:
        raise FailedPrecondition(
            f"zone.public_pool_start: public addresses in use fall outside the pool: "
            f"{', '.join(sorted(ips)[:5])}")
    public = ipaddress.IPv4Network(zone.public_cidr)
    routed_pool = ipaddress.IPv4Network(zone.routed_pool) if zone.routed_pool else None
    public6 = ipaddress.IPv6Network(zone.public_cidr6) if zone.public_cidr6 else None
    for net_id, cidr, routed, cidr6 in s.execute(select(
            NetworkRow.id, NetworkRow.cidr, NetworkRow.routed, NetworkRow.ipv6_cidr)):
        if public.overlaps(ipaddress.IPv4Network(cidr)):
            raise FailedPrecondition(
                f"zone.public_cidr: {zone.public_cidr} overlaps network {net_id} ({cidr})")
        if routed and (routed_pool is None
                       or not ipaddress.IPv4Network(cidr).subnet_of(routed_pool)):
            raise FailedPrecondition(
                f"zone.routed_pool: routed network {net_id} ({cidr}) would fall outside it")
        if cidr6 and public6 is not None and public6.overlaps(ipaddress.IPv6Network(cidr6)):
            raise FailedPrecondition(
                f"zone.public_cidr6: {zone.public_cidr6} is network {net_id}'s /64")
