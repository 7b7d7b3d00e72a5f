"""DNS records of tenant networks and VPCs in the store.

A record is checked alone (``netmgr.model.dns``), then in the write
transaction against everything its router serves (one namespace in the
router's dnsmasq: a VPC router serves its tiers' records and the VPC's own):
a CNAME is alone at its name (no other record, no port's name), an A or AAAA
record is not at a port's name (the router answers those from the ports), a
PTR is not for a gateway or a port's address (those have their own), no
CNAME loop, at most 256 records a network or VPC. Each change bumps the
router's generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, InvalidArgument, ResourceExhausted
from netmgr.model.dns import (
    DATA_SERVER,
    MAX_RECORDS_PER_NETWORK,
    ROUTER_NAME,
    DnsRecord,
    DnsRecordSpec,
    check_record,
)
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import check_id
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import NetworkRow, PortRow, RouterRow
from netmgr.store.tables.dns import DnsRecordRow


def dns_record(row: DnsRecordRow, applied: int | None = None) -> DnsRecord:
    return DnsRecord(status=rows.status(row, applied), network_id=row.network_id or "",
                     name=row.name, type=row.type, value=row.value, vpc_id=row.vpc_id or "")


def served_by(net_ids: Sequence[str], vpc_id: str | None) -> ColumnElement[bool]:
    """The records a router serves: its networks', and its VPC's own."""
    mine = DnsRecordRow.network_id.in_(net_ids)
    return or_(mine, DnsRecordRow.vpc_id == vpc_id) if vpc_id else mine


def records_of(s: Session, net_ids: Sequence[str],
               vpc_id: str | None = None) -> tuple[DnsRecord, ...]:
    """The records a router serves (its networks', its VPC's), in a stable order."""
    return tuple(dns_record(r) for r in s.scalars(
        select(DnsRecordRow).where(served_by(net_ids, vpc_id))
        .order_by(DnsRecordRow.network_id, DnsRecordRow.vpc_id, DnsRecordRow.name,
                  DnsRecordRow.type, DnsRecordRow.value)))


@dataclasses.dataclass(frozen=True)
class Scope:
    """Where a record goes: the router that serves it, every network that
    router serves and its VPC (one namespace in the router's dnsmasq), and
    the domain and CIDR the record's name must be inside."""

    router_id: str
    net_ids: tuple[str, ...]
    vpc_id: str | None
    domain: str
    cidr: str
    network_id: str | None = None  # the record's own network (None: the VPC's)


def scope(s: Session, tenant_id: TenantScope, spec: DnsRecordSpec) -> Scope:
    if bool(spec.network_id) == bool(spec.vpc_id):
        raise InvalidArgument.one("dns_record.network_id",
                                  "give the record's network or its VPC (vpc_id), one of them")
    if spec.vpc_id:
        vpc = shared.vpc_row(s, tenant_id, check_id(spec.vpc_id, "dns_record.vpc_id"),
                             "dns_record.vpc_id")
        router_id = s.scalar(select(RouterRow.id).where(RouterRow.vpc_id == vpc.id))
        assert router_id is not None, "every VPC has a router"
        return Scope(router_id, tuple(shared.router_network_ids(s, router_id)), vpc.id,
                     vpc.domain, vpc.cidr)
    net = shared.network(s, shared.network_row(
        s, tenant_id, check_id(spec.network_id, "dns_record.network_id"),
        "dns_record.network_id").id)
    return Scope(net.router_id, tuple(shared.router_network_ids(s, net.router_id)),
                 net.vpc_id or None, net.domain, net.cidr, net.id)


def _conflict(s: Session, where: Scope, name: str, kind: str) -> str | None:
    nets = list(s.execute(select(NetworkRow.domain, NetworkRow.gateway)
                          .where(NetworkRow.id.in_(where.net_ids))))
    ports = {f"{h}.{d.lower()}": ip for h, ip, d in s.execute(
        select(PortRow.hostname, PortRow.ip, NetworkRow.domain)
        .join(NetworkRow, PortRow.network_id == NetworkRow.id)
        .where(PortRow.network_id.in_(where.net_ids))) if d}
    others = set(s.scalars(select(DnsRecordRow.type).where(
        served_by(where.net_ids, where.vpc_id), DnsRecordRow.name == name)))
    if kind == "PTR":
        ip = ".".join(reversed(name.removesuffix(".in-addr.arpa").split(".")))
        if ip in {g for _, g in nets} or ip in ports.values():
            return f"{ip} is the router's or a port's address, which has its own PTR"
        return None
    if name in {f"{ROUTER_NAME}.{d.lower()}" for d, _ in nets if d} | \
            {f"{DATA_SERVER}.{d.lower()}" for d, _ in nets if d}:
        return f"{name} is the router's own name"
    if kind == "CNAME" and (others or name in ports):
        return f"{name} already has records or is a port's name; a CNAME must be alone"
    if "CNAME" in others:
        return f"{name} is a CNAME, which must be alone at its name"
    if kind in ("A", "AAAA") and name in ports:
        return f"{name} is a port's name (the router answers it)"
    return None


def _loops(s: Session, where: Scope, name: str, target: str) -> bool:
    """Whether the CNAME name -> target would close a loop of the CNAMEs the
    router serves (a VPC's tiers' and its own together: dnsmasq refuses a
    loop across them as well)."""
    cnames = {n: v for n, v in s.execute(select(DnsRecordRow.name, DnsRecordRow.value).where(
        served_by(where.net_ids, where.vpc_id), DnsRecordRow.type == "CNAME"))}
    seen = set()
    while target not in seen:
        if target == name:
            return True
        seen.add(target)
        if target not in cnames:
            return False
        target = cnames[target]
    return False


# The records a port's name may not carry: the router answers the port's
# name with its A (and AAAA), which a CNAME must not stand beside.
ADDRESS_TYPES = ("A", "AAAA", "CNAME")


def record_at_port_name(s: Session, network_id: str, hostname: str) -> str | None:
    """Why ``hostname`` cannot be a port's of this network: a record the
    router serves (the network's, a VPC tier's, the VPC's) holds its name.
    One query when no record has that name (every port's create)."""
    net = s.get_one(NetworkRow, network_id)
    if not net.domain:
        return None
    found = s.execute(select(DnsRecordRow.type, DnsRecordRow.id, DnsRecordRow.network_id,
                             DnsRecordRow.vpc_id).where(
        DnsRecordRow.name == f"{hostname}.{net.domain}".lower(),
        DnsRecordRow.type.in_(ADDRESS_TYPES))).all()
    if not found:
        return None
    served = set(shared.router_network_ids(s, shared.router_of(s, network_id)))
    for kind, record_id, record_net, record_vpc in found:
        if record_net in served or (record_vpc and record_vpc == net.vpc_id):
            return (f"{hostname}.{net.domain.lower()} is held by DNS record {record_id} "
                    f"({kind}); delete it first")
    return None


def _router_of(s: Session, row: DnsRecordRow) -> str:
    if row.network_id:
        return shared.router_of(s, row.network_id)
    router_id = s.scalar(select(RouterRow.id).where(RouterRow.vpc_id == row.vpc_id))
    assert router_id is not None, "every VPC has a router"
    return router_id


def _applied(s: Session, row: DnsRecordRow) -> int:
    if row.network_id:
        return shared.applied_generation(s, row.network_id)
    return int(s.scalar(select(RouterRow.applied_generation)
                        .where(RouterRow.vpc_id == row.vpc_id)) or 0)


class DnsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_dns_record(self, tenant_id: str, spec: DnsRecordSpec) -> DnsRecord:
        def tx(s: Session) -> DnsRecord:
            where = scope(s, tenant_id, spec)
            name, kind, value = check_record(spec, where.domain, where.cidr)
            problem = _conflict(s, where, name, kind)
            if problem:
                raise InvalidArgument.one("dns_record.name", problem)
            if kind == "CNAME" and _loops(s, where, name, value):
                raise InvalidArgument.one("dns_record.value", f"{value} leads back to {name} "
                                          "(a CNAME loop, which dnsmasq refuses)")
            if s.scalar(select(DnsRecordRow.id).where(
                    served_by(where.net_ids, where.vpc_id), DnsRecordRow.name == name,
                    DnsRecordRow.type == kind, DnsRecordRow.value == value)) is not None:
                raise AlreadyExists("dns_record", f"the router already serves {name} {kind} "
                                    f"{value[:60]}")
            own = (DnsRecordRow.network_id == where.network_id if where.network_id
                   else DnsRecordRow.vpc_id == where.vpc_id)
            count = s.scalar(select(func.count()).select_from(DnsRecordRow).where(own)) or 0
            if count >= MAX_RECORDS_PER_NETWORK:
                field = "network_id" if where.network_id else "vpc_id"
                raise ResourceExhausted(f"dns_record.{field}", f"a network or VPC holds at "
                                        f"most {MAX_RECORDS_PER_NETWORK} records")
            gen = shared.bump(s, where.router_id)
            row = DnsRecordRow(id=new_id(), tenant_id=tenant_id, network_id=where.network_id,
                               vpc_id=None if where.network_id else where.vpc_id, name=name,
                               type=kind, value=value, generation=gen, error="",
                               created_at=utcnow())
            s.add(row)
            s.flush()
            return dns_record(row, _applied(s, row))

        return self._db.write(tx)

    def router_of(self, record_id: str) -> str:
        """The router serving a record (its network's, or its VPC's)."""
        return self._db.read(lambda s: _router_of(s, s.get_one(DnsRecordRow, record_id)))

    def get_dns_record(self, tenant_id: str, record_id: str) -> DnsRecord:
        def tx(s: Session) -> DnsRecord:
            row = shared.owned(s, DnsRecordRow, tenant_id, record_id, "DNS record")
            return dns_record(row, _applied(s, row))

        return self._db.read(tx)

    def list_dns_records(self, tenant_id: TenantScope, page: PageRequest,
                         network_id: str = "", vpc_id: str = "") -> Page[DnsRecord]:
        def tx(s: Session) -> Page[DnsRecord]:
            stmt = of_tenant(select(DnsRecordRow), DnsRecordRow.tenant_id, tenant_id)
            if network_id:
                net = shared.network_row(s, tenant_id, network_id, "network_id")
                stmt = stmt.where(DnsRecordRow.network_id == net.id)
            if vpc_id:
                vpc = shared.vpc_row(s, tenant_id, check_id(vpc_id, "vpc_id"), "vpc_id")
                stmt = stmt.where(DnsRecordRow.vpc_id == vpc.id)
            return rows.paged_rows(s, stmt, DnsRecordRow, page, lambda r: dns_record(
                r, _applied(s, r)))

        return self._db.read(tx)

    def delete_dns_record(self, tenant_id: str, record_id: str) -> str:
        """Deletes the record; returns the router that served it."""

        def tx(s: Session) -> str:
            row = shared.owned(s, DnsRecordRow, tenant_id, record_id, "DNS record")
            router_id = _router_of(s, row)
            shared.bump(s, router_id)
            s.delete(row)
            return router_id

        return self._db.write(tx)
