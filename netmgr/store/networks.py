"""Networks in the store.

An isolated network is created with its VLAN, source-NAT public IP and
router (generation 1); a network with ``vpc_id`` is a VPC tier, made by the
VPC repository. Every change to what a router serves bumps the router's
``desired_generation`` in the same transaction. Another tenant's network is
NotFound.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from netmgr.model import core as model
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import (
    NetworkSpec,
    NetworkUpdate,
    check_network_placement,
    check_network_spec,
    check_network_update,
    raise_if,
    with_network_defaults,
)
from netmgr.store import concurrent_alloc, ipam, ipam6, quotas, rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.shared import TenantScope
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import (
    PUBLIC_IP_SOURCE_NAT,
    NetworkRow,
    PortRow,
    PublicIpRow,
    TenantRow,
)
from netmgr.store.vpcs import VpcStore, drop_tier

_INSERT_NETWORK = insert(NetworkRow)
_INSERT_PUBLIC_IP = insert(PublicIpRow)
_PLACED = select(NetworkRow.id, NetworkRow.name, NetworkRow.cidr)


def shared_network_vlan(s: Session, zone: model.Zone, spec: NetworkSpec) -> int:
    """A shared network's provider VLAN, checked (and its tenants exist)."""
    vlan = spec.provider_vlan
    problem = None
    if not 1 <= vlan <= 4094:
        problem = f"{vlan} is not a VLAN ID (1-4094)"
    elif zone.vlan_min <= vlan <= zone.vlan_max:
        problem = f"{vlan} is in the zone's guest range {zone.vlan_min}-{zone.vlan_max}"
    elif vlan in zone.reserved_vlans:
        problem = f"{vlan} is reserved by the fabric"
    elif zone.private_gateway_vlan_min <= vlan <= zone.private_gateway_vlan_max:
        problem = "is in the zone's private gateway range"
    if problem is not None:
        raise InvalidArgument.one("network.provider_vlan", problem)
    if s.scalar(select(NetworkRow.id).where(NetworkRow.vlan_id == vlan)) is not None:
        raise AlreadyExists("network.provider_vlan", f"VLAN {vlan} is in use")
    for i, tid in enumerate(spec.shared_tenant_ids):
        shared.tenant_row(s, tid, f"network.shared_tenant_ids[{i}]")
    return vlan


def check_tenant_list(s: Session, row: NetworkRow, tenant_ids: tuple[str, ...]) -> None:
    """A shared network's new tenant list: the tenants exist, and no tenant
    it leaves out still has ports there (as Neutron refuses to remove an
    RBAC policy in use: its ports would be another tenant's on a network it
    no longer sees; delete them first)."""
    if not row.shared:
        raise InvalidArgument.one("network.shared_tenant_ids",
                                  "only a shared network has a tenant list")
    for i, tid in enumerate(tenant_ids):
        if s.get(TenantRow, tid) is None:
            raise NotFound(f"network.shared_tenant_ids[{i}]: tenant {tid} not found")
    if not tenant_ids:  # open to every tenant
        return
    stranded = s.execute(
        select(PortRow.tenant_id, func.count()).where(
            PortRow.network_id == row.id, PortRow.tenant_id != row.tenant_id,
            PortRow.tenant_id.not_in(tenant_ids)).group_by(PortRow.tenant_id)).all()
    if stranded:
        ports = sum(n for _, n in stranded)
        names = ", ".join(sorted(t for t, _ in stranded)[:3])
        more = f" and {len(stranded) - 3} more" if len(stranded) > 3 else ""
        raise FailedPrecondition(
            f"network.shared_tenant_ids: {ports} port(s) of {len(stranded)} tenant(s) left "
            f"out ({names}{more}) are on network {row.id}; delete them first")


class NetworkStore:
    def __init__(self, db: Database, placement: shared.RouterPlacement,
                 vpcs: VpcStore) -> None:
        self._db = db
        self._placement = placement
        self._vpcs = vpcs

    def create_network(self, tenant_id: str, spec: NetworkSpec) -> model.Network:
        """Create a network with its VLAN, source-NAT IP and router (generation 1)."""
        spec = check_network_spec(spec)
        if spec.vpc_id:
            return self._vpcs.create_tier(tenant_id, spec)

        def tx(s: Session) -> model.Network:
            # A plain network does not wait for other creates (PostgreSQL:
            # concurrent_alloc); a shared one, or one with an IPv6 or routed
            # prefix to allocate, locks the zone as before.
            plain = (concurrent_alloc.postgres(s) and not spec.shared and not spec.routed
                     and not spec.ipv6_mode)
            zone = rows.zone(shared.zone_row(s, lock=not plain, share=plain))
            tenant = shared.tenant_row(s, tenant_id)
            routed = spec
            if spec.routed:
                routed = dataclasses.replace(spec, cidr=ipam6.routed_cidr(s, zone, spec))
            full = with_network_defaults(routed, tenant.name, zone)
            if plain:  # before the overlap check reads the tenant's networks
                concurrent_alloc.lock_address_space(s, tenant.id, full.cidr)
            # Only the columns the overlap check reads (every create reads
            # every network of the tenant).
            others = list(s.execute(_PLACED.where(NetworkRow.tenant_id == tenant.id)))
            if spec.shared:
                others += s.execute(_PLACED.where(NetworkRow.shared,
                                                  NetworkRow.tenant_id != tenant.id))
            raise_if(check_network_placement(full.cidr, zone, others))
            vlan_id = (shared_network_vlan(s, zone, spec) if spec.shared
                       else ipam.allocate_vlan(s, zone, skip_claimed=plain))
            ipv6_cidr, ipv6_mode = ipam6.network_ipv6(s, zone, full)
            now = utcnow()
            network_id = new_id()
            values = dict(
                id=network_id, tenant_id=tenant.id, name=full.name, cidr=full.cidr,
                gateway=full.gateway, domain=full.domain, dns_servers=list(full.dns_servers),
                domain_search=list(full.domain_search), mtu=full.mtu,
                lease_seconds=full.lease_seconds, vlan_id=vlan_id,
                created_at=now, updated_at=now, shared=spec.shared,
                shared_tenant_ids=list(spec.shared_tenant_ids),
                ipv6_cidr=ipv6_cidr, ipv6_mode=ipv6_mode, routed=full.routed)
            snat_ip = ipam.allocate_public_ip(s, zone, skip_claimed=plain)
            # Core inserts, not the ORM's unit of work (a hot write of the
            # API): so the quota check the flush would run is run here.
            quotas.enforce(s, {(tenant.id, "networks"): 1, (tenant.id, "public_ips"): 1})
            conn = s.connection()
            conn.execute(_INSERT_NETWORK, values)
            conn.execute(_INSERT_PUBLIC_IP, {
                "id": new_id(), "ip": snat_ip, "kind": PUBLIC_IP_SOURCE_NAT,
                "tenant_id": tenant.id, "network_id": network_id, "created_at": now})
            router_id = new_id()
            shared.add_router(s, self._placement, router_id, tenant.id, now,
                              network_id=network_id)
            # What shared.network would read back, known already: no round trip.
            return rows.network((NetworkRow(**values), router_id, snat_ip))

        return self._db.write(tx)

    def get_network(self, tenant_id: str, network_id: str) -> model.Network:
        def tx(s: Session) -> model.Network:
            return shared.network(s, shared.usable_network_row(s, tenant_id, network_id).id)

        return self._db.read(tx)

    def list_networks(self, tenant_id: TenantScope, page: PageRequest) -> Page[model.Network]:
        """The tenant's networks and the shared networks open to it."""
        stmt = rows.network_select()
        if tenant_id is not None:
            stmt = stmt.where(or_(NetworkRow.tenant_id == tenant_id, NetworkRow.shared))

        def usable(n: model.Network) -> bool:
            return (tenant_id is None or n.tenant_id == tenant_id or not n.shared_tenant_ids
                    or tenant_id in n.shared_tenant_ids)

        def tx(s: Session) -> Page[model.Network]:
            found = rows.paged(s, stmt, NetworkRow, page, rows.network)
            return dataclasses.replace(found, items=tuple(n for n in found.items if usable(n)))

        return self._db.read(tx)

    def update_network(self, tenant_id: str, network_id: str,
                       upd: NetworkUpdate) -> model.Network:
        upd = check_network_update(upd)

        def tx(s: Session) -> model.Network:
            row = shared.network_row(s, tenant_id, network_id, "network.id")
            if upd.shared_tenant_ids is not None:
                check_tenant_list(s, row, upd.shared_tenant_ids)
            changed = False
            for f in dataclasses.fields(upd):
                value = getattr(upd, f.name)
                if value is None:
                    continue
                if isinstance(value, tuple):
                    value = list(value)
                if getattr(row, f.name) != value:
                    setattr(row, f.name, value)
                    changed = True
            if changed:
                row.updated_at = utcnow()
                shared.bump(s, shared.router_of(s, row.id))
            s.flush()
            return shared.network(s, row.id)

        return self._db.write(tx)

    def delete_network(self, tenant_id: str, network_id: str, *,
                       force: bool = False) -> model.Network:
        """Delete a network, its router, VLAN and source-NAT IP (and with
        ``force`` its ports). Returns what was deleted."""

        def tx(s: Session) -> model.Network:
            row = shared.network_row(s, tenant_id, network_id)
            gone = shared.network(s, row.id)
            ports = s.scalar(select(func.count()).where(PortRow.network_id == row.id))
            if ports and not force:
                raise FailedPrecondition(
                    f"network {row.id} has {ports} port(s); delete them or set force")
            if row.vpc_id:
                drop_tier(s, row)
            # Ports, the router, MACs and public IPs go by ON DELETE CASCADE.
            s.execute(delete(NetworkRow).where(NetworkRow.id == row.id))
            return gone

        return self._db.write(tx)

    def router_of_network(self, network_id: str) -> str:
        return self._db.read(lambda s: shared.router_of(s, network_id))

    def network_cidr(self, network_id: str) -> str:
        return self._db.read(lambda s: s.scalar(
            select(NetworkRow.cidr).where(NetworkRow.id == network_id)) or "")
