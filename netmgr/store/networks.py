"""Networks in the store.

An isolated network is created with its VLAN, source-NAT public IP and
router (generation 1); a network with ``vpc_id`` is a VPC tier, made by the
VPC repository. Every change to what a router serves bumps the router's
``desired_generation`` in the same transaction. Another tenant's network is
NotFound.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from common.grpc_errors import FailedPrecondition
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
from netmgr.store import ipam, ipam6, rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PUBLIC_IP_SOURCE_NAT, NetworkRow, PortRow, PublicIpRow
from netmgr.store.vpcs import VpcStore, drop_tier


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
            zone = rows.zone(shared.zone_row(s, lock=True))
            tenant = shared.tenant_row(s, tenant_id)
            routed = spec
            if spec.routed:
                routed = dataclasses.replace(spec, cidr=ipam6.routed_cidr(s, zone, spec))
            full = with_network_defaults(routed, tenant.name, zone)
            others = [rows.network(r) for r in s.execute(
                rows.network_select().where(NetworkRow.tenant_id == tenant.id))]
            raise_if(check_network_placement(full.cidr, zone, others))
            ipv6_cidr, ipv6_mode = ipam6.network_ipv6(s, zone, full)
            now = utcnow()
            network_id = new_id()
            s.add(NetworkRow(
                id=network_id, tenant_id=tenant.id, name=full.name, cidr=full.cidr,
                gateway=full.gateway, domain=full.domain, dns_servers=list(full.dns_servers),
                domain_search=list(full.domain_search), mtu=full.mtu,
                lease_seconds=full.lease_seconds, vlan_id=ipam.allocate_vlan(s, zone),
                created_at=now, updated_at=now, ipv6_cidr=ipv6_cidr, ipv6_mode=ipv6_mode,
                routed=full.routed))
            s.add(PublicIpRow(
                id=new_id(), ip=ipam.allocate_public_ip(s, zone), kind=PUBLIC_IP_SOURCE_NAT,
                tenant_id=tenant.id, network_id=network_id, created_at=now))
            shared.add_router(s, self._placement, new_id(), tenant.id, now,
                              network_id=network_id)
            return shared.network(s, network_id)

        return self._db.write(tx)

    def get_network(self, tenant_id: str, network_id: str) -> model.Network:
        def tx(s: Session) -> model.Network:
            return shared.network(s, shared.network_row(s, tenant_id, network_id).id)

        return self._db.read(tx)

    def list_networks(self, tenant_id: TenantScope, page: PageRequest) -> Page[model.Network]:
        stmt = of_tenant(rows.network_select(), NetworkRow.tenant_id, tenant_id)
        return self._db.read(lambda s: rows.paged(s, stmt, NetworkRow, page, rows.network))

    def update_network(self, tenant_id: str, network_id: str,
                       upd: NetworkUpdate) -> model.Network:
        upd = check_network_update(upd)

        def tx(s: Session) -> model.Network:
            row = shared.network_row(s, tenant_id, network_id, "network.id")
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
