"""Tenant public IPs in the store: addresses of the zone's pool a tenant
allocates and associates to one of its networks, for static NAT, port
forwards, firewall rules and load balancers (``public_ips`` rows of kind
``tenant``; a network's or VPC's source-NAT address is a row of that table
too, but it belongs to its network).

Associating or releasing an address bumps the generation of the routers
involved, and the row records it, like every edge object.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import FailedPrecondition
from netmgr.model import edge as me
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import check_id
from netmgr.store import ipam, rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PUBLIC_IP_SOURCE_NAT, NetworkRow, PublicIpRow
from netmgr.store.tables.edge import (
    PUBLIC_IP_TENANT,
    FirewallRuleRow,
    LoadBalancerRow,
    PortForwardRow,
    StaticNatRow,
)


def public_ip(s: Session, row: PublicIpRow) -> me.PublicIp:
    return me.PublicIp(
        status=rows.status(row, shared.applied_generation(s, row.network_id)), ip=row.ip,
        network_id=row.network_id or "", source_nat=row.kind == PUBLIC_IP_SOURCE_NAT)


def public_ip_row(s: Session, tenant_id: str, ip_id: str, field: str = "id") -> PublicIpRow:
    return shared.owned(s, PublicIpRow, tenant_id, ip_id, "public IP", field)


def rule_ip(s: Session, tenant_id: str, ip_id: str, field: str, *,
            source_nat: bool = False) -> PublicIpRow:
    """The tenant address a rule or load balancer uses: associated to a
    network; with ``source_nat`` (port forwards, load balancers) a network's
    or VPC's source-NAT address too. Its outbound connections are
    connection-tracked, so their replies never meet a forward (the router's
    table: router/templates/nftables/cloudnet.nft.j2)."""
    row = public_ip_row(s, tenant_id, ip_id, field)
    if row.kind != PUBLIC_IP_TENANT:
        if source_nat:
            return row
        raise FailedPrecondition(
            f"{field}: {row.ip} is a network's source-NAT address (it takes port forwards and "
            "load balancers, not static NAT or firewall rules); allocate a public IP")
    if not row.network_id:
        raise FailedPrecondition(
            f"{field}: public IP {row.ip} is not associated to a network")
    return row


def serves(s: Session, ip: PublicIpRow, network_id: str) -> bool:
    """Whether rules on ``ip`` may reach ``network_id``: the network it is
    associated to (or is the source-NAT address of), or any tier of the VPC
    whose source-NAT address it is."""
    if ip.network_id is not None:
        return ip.network_id == network_id
    return ip.vpc_id is not None and s.scalar(
        select(NetworkRow.vpc_id).where(NetworkRow.id == network_id)) == ip.vpc_id


def _ip_in_use(s: Session, ip_id: str) -> str:
    for table, what in ((StaticNatRow, "static NAT"), (PortForwardRow, "port forwards"),
                        (FirewallRuleRow, "firewall rules"),
                        (LoadBalancerRow, "load balancers")):
        if s.scalar(select(table.id).where(table.public_ip_id == ip_id).limit(1)):
            return what
    return ""


class PublicIpStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def allocate_public_ip(self, tenant_id: str, network_id: str) -> tuple[me.PublicIp, str]:
        """A new tenant address; returns it and the router to notify ("" if none)."""

        def tx(s: Session) -> tuple[me.PublicIp, str]:
            zone = rows.zone(shared.zone_row(s, lock=True))
            tenant = shared.tenant_row(s, tenant_id)
            router_id, gen = "", 0
            if network_id:
                net = shared.usable_network_row(s, tenant.id, network_id, "network_id")
                router_id = shared.router_of(s, net.id)
                gen = shared.bump(s, router_id)
            row = PublicIpRow(id=new_id(), ip=ipam.allocate_public_ip(s, zone),
                              kind=PUBLIC_IP_TENANT, tenant_id=tenant.id,
                              network_id=network_id or None, generation=gen, error="",
                              created_at=utcnow())
            s.add(row)
            s.flush()
            return public_ip(s, row), router_id

        return self._db.write(tx)

    def get_public_ip(self, tenant_id: str, ip_id: str) -> me.PublicIp:
        return self._db.read(lambda s: public_ip(s, public_ip_row(s, tenant_id, ip_id)))

    def list_public_ips(self, tenant_id: TenantScope, page: PageRequest,
                        network_id: str = "") -> Page[me.PublicIp]:
        stmt = of_tenant(select(PublicIpRow), PublicIpRow.tenant_id, tenant_id)
        if network_id:
            stmt = stmt.where(PublicIpRow.network_id == check_id(network_id, "network_id"))
        return self._db.read(lambda s: rows.paged_rows(s, stmt, PublicIpRow, page,
                                                       lambda r: public_ip(s, r)))

    def associate_public_ip(self, tenant_id: str, ip_id: str,
                            network_id: str) -> tuple[me.PublicIp, tuple[str, ...]]:
        def tx(s: Session) -> tuple[me.PublicIp, tuple[str, ...]]:
            row = public_ip_row(s, tenant_id, ip_id)
            if row.kind != PUBLIC_IP_TENANT:
                raise FailedPrecondition(f"id: {row.ip} is a network's source-NAT address")
            new_net = (shared.usable_network_row(s, tenant_id, network_id, "network_id").id
                       if network_id else None)
            if new_net == row.network_id:
                return public_ip(s, row), ()
            used = _ip_in_use(s, row.id)
            if used:
                raise FailedPrecondition(f"public IP {row.ip} is used by {used}; delete them first")
            routers = [shared.router_of(s, n) for n in (row.network_id, new_net) if n]
            gens = [shared.bump(s, r) for r in routers]
            row.network_id = new_net
            row.generation = gens[-1] if new_net else 0
            row.error = ""
            s.flush()
            return public_ip(s, row), tuple(routers)

        return self._db.write(tx)

    def release_public_ip(self, tenant_id: str, ip_id: str) -> str:
        """Return the address to the pool; the router to notify ("" if none)."""

        def tx(s: Session) -> str:
            row = public_ip_row(s, tenant_id, ip_id)
            if row.kind != PUBLIC_IP_TENANT:
                raise FailedPrecondition(
                    f"{row.ip} is a network's source-NAT address; it goes with the network")
            used = _ip_in_use(s, row.id)
            if used:
                raise FailedPrecondition(f"public IP {row.ip} is used by {used}; delete them first")
            router_id = shared.router_of(s, row.network_id) if row.network_id else ""
            if router_id:
                shared.bump(s, router_id)
            s.delete(row)
            return router_id

        return self._db.write(tx)
