"""VPCs and their tiers in the store.

A VPC is created with its router (no network of its own) and the router's
source-NAT public IP; the router takes the configured backend (a namespace,
or an appliance VM whose tier NICs are hot-plugged:
``netmgr.reconcile.vm_backend.nic_plan``).
A tier is a network with ``vpc_id``: it gets a VLAN and its own router-side
MAC (claimed in ``mac_addresses`` like every MAC, so concurrent tier
creations never share one), and bumps the VPC router's
generation. Deleting a tier releases that MAC; a VPC is deleted only once
its tiers are gone (its router and source-NAT address go with it).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from common.grpc_errors import FailedPrecondition, InvalidArgument
from netmgr.model import core as model
from netmgr.model import vpc as mv
from netmgr.model.field_rules import dns_name_problem
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import NetworkSpec, dns_label_from, raise_if, with_network_defaults
from netmgr.model.validation_vpc import (
    VpcSpec,
    check_tier_placement,
    check_vpc_name,
    check_vpc_placement,
    check_vpc_spec,
)
from netmgr.store import ipam, ipam6, rows, shared
from netmgr.store.acls import acl_snapshot, check_tier_acl, network_acl
from netmgr.store.base import Database, new_id
from netmgr.store.routes import check_no_routes_via, check_segment_room, route_snapshot
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import (
    PUBLIC_IP_SOURCE_NAT,
    MacRow,
    NetworkRow,
    PublicIpRow,
    RouterRow,
)
from netmgr.store.tables.vpc import NetworkAclRow, VpcRow


def _vpc(s: Session, row: VpcRow) -> mv.Vpc:
    router_id = s.scalar(select(RouterRow.id).where(RouterRow.vpc_id == row.id)) or ""
    snat = s.scalar(select(PublicIpRow.ip).where(
        PublicIpRow.vpc_id == row.id, PublicIpRow.kind == PUBLIC_IP_SOURCE_NAT)) or ""
    tiers = tuple(s.scalars(select(NetworkRow.id).where(NetworkRow.vpc_id == row.id)
                            .order_by(NetworkRow.created_at, NetworkRow.id)))
    return mv.Vpc(id=row.id, tenant_id=row.tenant_id, name=row.name, cidr=row.cidr,
                  domain=row.domain, created_at=rows.aware(row.created_at),
                  router_id=router_id, source_nat_ip=snat, tier_ids=tiers)


def _vpc_router_id(s: Session, vpc_id: str) -> str:
    router_id = s.scalar(select(RouterRow.id).where(RouterRow.vpc_id == vpc_id))
    assert router_id is not None, "every VPC has a router"
    return router_id


def vpc_snapshot(s: Session, router: model.Router) -> mv.VpcSnapshot | None:
    """What a VPC router serves of its VPC, for its RouterSnapshot (None: no VPC)."""
    if not router.vpc_id:
        return None
    row = s.get(VpcRow, router.vpc_id)
    assert row is not None
    acls, tier_acls = acl_snapshot(s, row.id)
    routes, gateways = route_snapshot(s, row.id)
    # A private gateway's list is served like a tier's.
    extra = {g.acl_id for g in gateways} - {a.id for a in acls}
    acls += tuple(network_acl(s, mv.BUILTIN_ACLS.get(a) or s.get_one(NetworkAclRow, a),
                              row.id, with_rules=True) for a in sorted(extra))
    tier_acls += tuple((g.id, g.acl_id) for g in gateways)
    return mv.VpcSnapshot(vpc=_vpc(s, row), acls=acls, tier_acls=tier_acls,
                          routes=routes, gateways=gateways)


def drop_tier(s: Session, row: NetworkRow) -> None:
    """Before a tier's row goes: free its router MAC, bump the VPC router."""
    assert row.vpc_id is not None
    check_no_routes_via(s, row.vpc_id, row.cidr, f"tier {row.id}")
    if row.ipv6_cidr:
        check_no_routes_via(s, row.vpc_id, row.ipv6_cidr, f"tier {row.id}")
    if row.router_mac:
        s.execute(delete(MacRow).where(MacRow.mac == row.router_mac))
    shared.bump(s, _vpc_router_id(s, row.vpc_id))


class VpcStore:
    def __init__(self, db: Database, placement: shared.RouterPlacement) -> None:
        self._db = db
        self._placement = placement

    # ---------------------------------------------------------------- VPCs

    def create_vpc(self, tenant_id: str, spec: VpcSpec) -> mv.Vpc:
        """Create a VPC with its router and source-NAT public IP (generation 1)."""
        spec = check_vpc_spec(spec)

        def tx(s: Session) -> mv.Vpc:
            zone = rows.zone(shared.zone_row(s, lock=True))
            tenant = shared.tenant_row(s, tenant_id)
            raise_if(check_vpc_placement(spec.cidr, zone))
            domain = spec.domain or ".".join((
                dns_label_from(spec.name, "vpc"), dns_label_from(tenant.name, "tenant"),
                zone.domain_suffix))
            now = utcnow()
            vpc_id = new_id()
            s.add(VpcRow(id=vpc_id, tenant_id=tenant.id, name=spec.name, cidr=spec.cidr,
                         domain=domain, created_at=now, updated_at=now))
            s.flush()
            s.add(PublicIpRow(id=new_id(), ip=ipam.allocate_public_ip(s, zone),
                              kind=PUBLIC_IP_SOURCE_NAT, tenant_id=tenant.id, network_id=None,
                              vpc_id=vpc_id, created_at=now))
            shared.add_router(s, self._placement, new_id(), tenant.id, now, vpc_id=vpc_id)
            return _vpc(s, s.get_one(VpcRow, vpc_id))

        return self._db.write(tx)

    def get_vpc(self, tenant_id: str, vpc_id: str) -> mv.Vpc:
        return self._db.read(lambda s: _vpc(s, shared.vpc_row(s, tenant_id, vpc_id)))

    def list_vpcs(self, tenant_id: TenantScope, page: PageRequest) -> Page[mv.Vpc]:
        stmt = of_tenant(select(VpcRow), VpcRow.tenant_id, tenant_id)
        return self._db.read(lambda s: rows.paged_rows(s, stmt, VpcRow, page,
                                                       lambda r: _vpc(s, r)))

    def update_vpc(self, tenant_id: str, vpc_id: str, name: str | None) -> mv.Vpc:
        if name is not None:
            check_vpc_name(name)

        def tx(s: Session) -> mv.Vpc:
            row = shared.vpc_row(s, tenant_id, vpc_id, "vpc.id")
            if name is not None and row.name != name:
                row.name = name
                row.updated_at = utcnow()
            s.flush()
            return _vpc(s, row)

        return self._db.write(tx)

    def delete_vpc(self, tenant_id: str, vpc_id: str) -> mv.Vpc:
        """Delete an empty VPC with its router and source-NAT address; returns it
        (its router_id is the router to tear down)."""

        def tx(s: Session) -> mv.Vpc:
            row = shared.vpc_row(s, tenant_id, vpc_id)
            gone = _vpc(s, row)
            if gone.tier_ids:
                raise FailedPrecondition(
                    f"VPC {row.id} has {len(gone.tier_ids)} tier(s); delete them first")
            # The router goes by ON DELETE CASCADE, the address here.
            s.execute(delete(PublicIpRow).where(PublicIpRow.vpc_id == row.id))
            s.execute(delete(VpcRow).where(VpcRow.id == row.id))
            return gone

        return self._db.write(tx)

    # --------------------------------------------------------------- tiers

    def create_tier(self, tenant_id: str, spec: NetworkSpec) -> model.Network:
        """A network inside a VPC (``spec`` already checked): its VLAN, its own
        MAC on the VPC router, and the router's next generation."""

        def tx(s: Session) -> model.Network:
            zone = rows.zone(shared.zone_row(s, lock=True))
            tenant = shared.tenant_row(s, tenant_id)
            vpc = shared.vpc_row(s, tenant.id, spec.vpc_id, "network.vpc_id")
            check_segment_room(s, vpc.id, "network.vpc_id")
            full = spec
            if not spec.domain:
                full = dataclasses.replace(
                    spec, domain=f"{dns_label_from(spec.name, 'tier')}.{vpc.domain}")
                if (p := dns_name_problem(full.domain)) is not None:
                    raise InvalidArgument.one("network.domain",
                                              f"the default domain is invalid: {p}")
            if not spec.domain_search:
                # <host> resolves in the own tier, <host>.<tier> in the others.
                full = dataclasses.replace(full, domain_search=(full.domain, vpc.domain))
            full = with_network_defaults(full, tenant.name, zone)
            tiers = [rows.network(r) for r in s.execute(
                rows.network_select().where(NetworkRow.vpc_id == vpc.id))]
            raise_if(check_tier_placement(full.cidr, vpc.cidr, tiers))
            ipv6_cidr, ipv6_mode = ipam6.network_ipv6(s, zone, full)
            # One router serves every tier's names: a domain per tier, or two
            # tiers' guests with one hostname would share a name.
            same = next((t for t in tiers if t.domain == full.domain), None)
            if same is not None:
                raise InvalidArgument.one("network.domain", f"{full.domain} is the domain of "
                                          f"tier {same.name!r} ({same.id})")
            acl_id = (check_tier_acl(s, tenant.id, vpc.id, spec.acl_id, "network.acl_id")
                      if spec.acl_id else None)
            router_id = _vpc_router_id(s, vpc.id)
            shared.bump(s, router_id)
            now = utcnow()
            network_id = new_id()
            mac = ipam.allocate_mac(s)
            s.add(NetworkRow(
                id=network_id, tenant_id=tenant.id, name=full.name, cidr=full.cidr,
                gateway=full.gateway, domain=full.domain, dns_servers=list(full.dns_servers),
                domain_search=list(full.domain_search), mtu=full.mtu,
                lease_seconds=full.lease_seconds, vlan_id=ipam.allocate_vlan(s, zone),
                vpc_id=vpc.id, router_mac=mac, acl_id=acl_id, created_at=now, updated_at=now,
                ipv6_cidr=ipv6_cidr, ipv6_mode=ipv6_mode))
            s.flush()
            ipam.claim_mac(s, mac, router_id=router_id, field="network.router_mac")
            s.flush()
            return shared.network(s, network_id)

        return self._db.write(tx)
