"""Static routes and private gateways of a VPC in the store.

A route's next hop must lie on one of the VPC's tiers or private gateways
(checked against committed rows in the same write transaction, after the
VPC router's row lock on PostgreSQL), and its CIDR must not overlap them.
A private gateway takes a provider VLAN: the lowest free one of the zone's
private gateway range, or one the admin names (outside the guest range and
the reserved VLANs, not used by any network; ``netmgr.model.vlans``), its
own router MAC (claimed like every MAC) and a
network ACL list. Tiers and gateways that routes go through cannot be
deleted before the routes.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from common.grpc_errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from netmgr.model import vpc as mv
from netmgr.model.ipv6_rules import ipv6_gateway
from netmgr.model.validation_vpc import check_private_gateway, check_static_route, next_hop_problem
from netmgr.store import ipam, rows, shared
from netmgr.store.acls import check_tier_acl
from netmgr.store.base import Database, new_id
from netmgr.store.shared import TenantScope
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import MacRow, NetworkRow
from netmgr.store.tables.vpc import PrivateGatewayRow, StaticRouteRow

# Tiers plus private gateways per VPC: 16 NICs of a router VM, less the
# control and public ones.
MAX_VPC_SEGMENTS = 14


def _subnets(s: Session, vpc_id: str) -> list[tuple[str, str, str]]:
    """(id, subnet, router address) of the VPC's tiers and private gateways."""
    out = [(n, c, g) for n, c, g in s.execute(
        select(NetworkRow.id, NetworkRow.cidr, NetworkRow.gateway)
        .where(NetworkRow.vpc_id == vpc_id))]
    for g in s.scalars(select(PrivateGatewayRow).where(PrivateGatewayRow.vpc_id == vpc_id)):
        iface = ipaddress.IPv4Interface(g.address)
        out.append((g.id, str(iface.network), str(iface.ip)))
    # The tiers' IPv6 /64s: an IPv6 route's next hop lies on one.
    out += [(n, c, ipv6_gateway(c)) for n, c in s.execute(
        select(NetworkRow.id, NetworkRow.ipv6_cidr)
        .where(NetworkRow.vpc_id == vpc_id, NetworkRow.ipv6_cidr.is_not(None))) if c]
    return out


def _route(s: Session, row: StaticRouteRow, applied: int | None = None,
           subnets: list[tuple[str, str, str]] | None = None) -> mv.StaticRoute:
    if applied is None:
        applied = shared.vpc_router(s, row.vpc_id).applied_generation
    hop = ipaddress.ip_address(row.next_hop)
    via = next((i for i, c, _ in (subnets or _subnets(s, row.vpc_id))
                if ipaddress.ip_network(c).version == hop.version
                and hop in ipaddress.ip_network(c)), "")
    return mv.StaticRoute(status=rows.status(row, applied), vpc_id=row.vpc_id, cidr=row.cidr,
                          next_hop=row.next_hop, via_id=via)


def _gateway(s: Session, row: PrivateGatewayRow,
             applied: int | None = None) -> mv.PrivateGateway:
    if applied is None:
        applied = shared.vpc_router(s, row.vpc_id).applied_generation
    return mv.PrivateGateway(
        status=rows.status(row, applied), vpc_id=row.vpc_id, vlan_id=row.vlan_id,
        address=row.address, gateway=row.gateway, acl_id=row.acl_id,
        router_mac=row.router_mac)


def route_snapshot(s: Session, vpc_id: str) -> tuple[
        tuple[mv.StaticRoute, ...], tuple[mv.PrivateGateway, ...]]:
    applied = shared.vpc_router(s, vpc_id).applied_generation
    subnets = _subnets(s, vpc_id)
    routes = tuple(_route(s, r, applied, subnets) for r in s.scalars(
        select(StaticRouteRow).where(StaticRouteRow.vpc_id == vpc_id)
        .order_by(StaticRouteRow.cidr)))
    gateways = tuple(_gateway(s, g, applied) for g in s.scalars(
        select(PrivateGatewayRow).where(PrivateGatewayRow.vpc_id == vpc_id)
        .order_by(PrivateGatewayRow.id)))
    return routes, gateways


def check_no_routes_via(s: Session, vpc_id: str, cidr: str, what: str) -> None:
    net = ipaddress.ip_network(cidr)
    used = [r.cidr for r in s.scalars(select(StaticRouteRow)
                                      .where(StaticRouteRow.vpc_id == vpc_id))
            if ipaddress.ip_address(r.next_hop).version == net.version
            and ipaddress.ip_address(r.next_hop) in net]
    if used:
        raise FailedPrecondition(f"static routes to {', '.join(used)} go through {what}; "
                                 "delete them first")


def check_segment_room(s: Session, vpc_id: str, field: str) -> None:
    """A VPC router has one NIC per tier and per private gateway, besides
    its control and public NICs, and a router VM holds at most 16 NICs
    (``compute.router_vm.nics.MAX_NICS``). The cap is the same on either
    backend, so a VPC that works on one works on the other."""
    used = (s.scalar(select(func.count()).select_from(NetworkRow)
                     .where(NetworkRow.vpc_id == vpc_id)) or 0) + \
        (s.scalar(select(func.count()).select_from(PrivateGatewayRow)
                  .where(PrivateGatewayRow.vpc_id == vpc_id)) or 0)
    if used >= MAX_VPC_SEGMENTS:
        raise ResourceExhausted(field, f"the VPC has {used} tiers and private gateways, "
                                f"the most a VPC router serves ({MAX_VPC_SEGMENTS})")


def _check_subnet_free(s: Session, vpc_id: str, cidr: str, field: str) -> None:
    net = ipaddress.ip_network(cidr)
    for obj_id, other, _ in _subnets(s, vpc_id):
        peer = ipaddress.ip_network(other)
        if peer.version == net.version and net.overlaps(peer):
            raise InvalidArgument.one(field, f"{cidr} overlaps {other} ({obj_id})")


class RouteStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ---------------------------------------------------------------- routes

    def create_static_route(self, tenant_id: str, vpc_id: str, cidr: str,
                            next_hop: str) -> mv.StaticRoute:
        cidr, next_hop = check_static_route(cidr, next_hop)

        def tx(s: Session) -> mv.StaticRoute:
            vpc = shared.vpc_row(s, tenant_id, vpc_id, "static_route.vpc_id")
            router = shared.vpc_router(s, vpc.id)
            gen = shared.bump(s, router.id)
            _check_subnet_free(s, vpc.id, cidr, "static_route.cidr")
            zone = rows.zone(shared.zone_row(s))
            net = ipaddress.ip_network(cidr)
            for public in (zone.public_cidr, zone.public_cidr6):
                if public and ipaddress.ip_network(public).version == net.version and \
                        net.overlaps(ipaddress.ip_network(public)):
                    raise InvalidArgument.one("static_route.cidr", f"{cidr} overlaps the "
                                              f"zone's public network {public}")
            next_hop_problem(next_hop, _subnets(s, vpc.id))
            if s.scalar(select(StaticRouteRow.id).where(StaticRouteRow.vpc_id == vpc.id,
                                                        StaticRouteRow.cidr == cidr)):
                raise AlreadyExists("static_route.cidr", f"the VPC already routes {cidr}")
            row = StaticRouteRow(id=new_id(), tenant_id=tenant_id, vpc_id=vpc.id, cidr=cidr,
                                 next_hop=next_hop, generation=gen, error="",
                                 created_at=utcnow())
            s.add(row)
            s.flush()
            return _route(s, row)

        return self._db.write(tx)

    def get_static_route(self, tenant_id: str, route_id: str) -> mv.StaticRoute:
        return self._db.read(lambda s: _route(
            s, shared.owned(s, StaticRouteRow, tenant_id, route_id, "static route")))

    def list_static_routes(self, tenant_id: TenantScope,
                           vpc_id: str) -> tuple[mv.StaticRoute, ...]:
        def tx(s: Session) -> tuple[mv.StaticRoute, ...]:
            return route_snapshot(s, shared.vpc_row(s, tenant_id, vpc_id, "vpc_id").id)[0]

        return self._db.read(tx)

    def delete_static_route(self, tenant_id: str, route_id: str) -> str:
        def tx(s: Session) -> str:
            row = shared.owned(s, StaticRouteRow, tenant_id, route_id, "static route")
            router = shared.vpc_router(s, row.vpc_id)
            shared.bump(s, router.id)
            s.delete(row)
            return router.id

        return self._db.write(tx)

    # ------------------------------------------------------ private gateways

    def create_private_gateway(self, tenant_id: str, vpc_id: str, vlan_id: int, address: str,
                               gateway: str, acl_id: str = "") -> mv.PrivateGateway:
        def tx(s: Session) -> mv.PrivateGateway:
            zone = rows.zone(shared.zone_row(s, lock=True))
            addr, gw = check_private_gateway(vlan_id, address, gateway, zone)
            vpc = shared.vpc_row(s, tenant_id, vpc_id, "private_gateway.vpc_id")
            check_segment_room(s, vpc.id, "private_gateway.vpc_id")
            acl = (check_tier_acl(s, tenant_id, vpc.id, acl_id, "private_gateway.acl_id")
                   if acl_id else mv.DEFAULT_ALLOW_ID)
            _check_subnet_free(s, vpc.id, str(ipaddress.IPv4Interface(addr).network),
                                    "private_gateway.address")
            if vlan_id:  # named by the admin
                vlan = vlan_id
                taken = s.scalar(select(NetworkRow.id).where(NetworkRow.vlan_id == vlan)) or \
                    s.scalar(select(PrivateGatewayRow.id).where(PrivateGatewayRow.vlan_id == vlan))
                if taken:
                    raise AlreadyExists("private_gateway.vlan_id", f"VLAN {vlan} is in use")
            else:
                vlan = ipam.allocate_private_gateway_vlan(s, zone)
            router = shared.vpc_router(s, vpc.id)
            gen = shared.bump(s, router.id)
            mac = ipam.allocate_mac(s)
            row = PrivateGatewayRow(id=new_id(), tenant_id=tenant_id, vpc_id=vpc.id,
                                    vlan_id=vlan, address=addr, gateway=gw, acl_id=acl,
                                    router_mac=mac, generation=gen, error="",
                                    created_at=utcnow())
            s.add(row)
            s.flush()
            ipam.claim_mac(s, mac, router_id=router.id, field="private_gateway.router_mac")
            s.flush()
            return _gateway(s, row)

        return self._db.write(tx)

    def get_private_gateway(self, tenant_id: str, gw_id: str) -> mv.PrivateGateway:
        return self._db.read(lambda s: _gateway(
            s, shared.owned(s, PrivateGatewayRow, tenant_id, gw_id, "private gateway")))

    def list_private_gateways(self, tenant_id: TenantScope,
                              vpc_id: str) -> tuple[mv.PrivateGateway, ...]:
        def tx(s: Session) -> tuple[mv.PrivateGateway, ...]:
            return route_snapshot(s, shared.vpc_row(s, tenant_id, vpc_id, "vpc_id").id)[1]

        return self._db.read(tx)

    def delete_private_gateway(self, tenant_id: str, gw_id: str) -> str:
        def tx(s: Session) -> str:
            row = shared.owned(s, PrivateGatewayRow, tenant_id, gw_id, "private gateway")
            check_no_routes_via(s, row.vpc_id, str(ipaddress.IPv4Interface(
                row.address).network), f"private gateway {row.id}")
            router = shared.vpc_router(s, row.vpc_id)
            shared.bump(s, router.id)
            s.execute(delete(MacRow).where(MacRow.mac == row.router_mac))
            s.delete(row)
            return router.id

        return self._db.write(tx)
