"""DNS records of tenant networks in the store.

A record is checked alone (``netmgr.model.dns``), then against its network
in the write transaction: a CNAME is alone at its name (no other record, no
port's name), an A or AAAA record is not at a port's name (the router
answers those from the ports), a PTR is not for the gateway or a port's
address (those have their own), at most 256 records a network. Each change
bumps the network's router's generation.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, InvalidArgument, ResourceExhausted
from netmgr.model.dns import MAX_RECORDS_PER_NETWORK, DnsRecord, DnsRecordSpec, check_record
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import check_id
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PortRow
from netmgr.store.tables.dns import DnsRecordRow


def dns_record(row: DnsRecordRow, applied: int | None = None) -> DnsRecord:
    return DnsRecord(status=rows.status(row, applied), network_id=row.network_id,
                     name=row.name, type=row.type, value=row.value)


def records_of(s: Session, net_ids: Sequence[str]) -> tuple[DnsRecord, ...]:
    """The records of these networks (a router snapshot's), in a stable order."""
    return tuple(dns_record(r) for r in s.scalars(
        select(DnsRecordRow).where(DnsRecordRow.network_id.in_(net_ids))
        .order_by(DnsRecordRow.network_id, DnsRecordRow.name, DnsRecordRow.type,
                  DnsRecordRow.value)))


def _conflict(s: Session, network_id: str, domain: str, gateway: str, name: str,
              kind: str) -> str | None:
    ports = {f"{h}.{domain.lower()}": ip for h, ip in s.execute(
        select(PortRow.hostname, PortRow.ip).where(PortRow.network_id == network_id))}
    others = set(s.scalars(select(DnsRecordRow.type).where(
        DnsRecordRow.network_id == network_id, DnsRecordRow.name == name)))
    if kind == "PTR":
        ip = ".".join(reversed(name.removesuffix(".in-addr.arpa").split(".")))
        if ip == gateway or ip in ports.values():
            return f"{ip} is the router's or a port's address, which has its own PTR"
        return None
    if kind == "CNAME" and (others or name in ports):
        return f"{name} already has records or is a port's name; a CNAME must be alone"
    if "CNAME" in others:
        return f"{name} is a CNAME, which must be alone at its name"
    if kind in ("A", "AAAA") and name in ports:
        return f"{name} is a port's name (the router answers it)"
    return None


def _loops(s: Session, network_id: str, name: str, target: str) -> bool:
    """Whether the CNAME name -> target would close a loop of the network's CNAMEs."""
    cnames = {n: v for n, v in s.execute(select(DnsRecordRow.name, DnsRecordRow.value).where(
        DnsRecordRow.network_id == network_id, DnsRecordRow.type == "CNAME"))}
    seen = set()
    while target not in seen:
        if target == name:
            return True
        seen.add(target)
        if target not in cnames:
            return False
        target = cnames[target]
    return False


class DnsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_dns_record(self, tenant_id: str, spec: DnsRecordSpec) -> DnsRecord:
        network_id = check_id(spec.network_id, "dns_record.network_id")

        def tx(s: Session) -> DnsRecord:
            net = shared.network(s, shared.network_row(s, tenant_id, network_id,
                                                       "dns_record.network_id").id)
            name, kind, value = check_record(spec, net.domain, net.cidr)
            problem = _conflict(s, net.id, net.domain, net.gateway, name, kind)
            if problem:
                raise InvalidArgument.one("dns_record.name", problem)
            if kind == "CNAME" and _loops(s, net.id, name, value):
                raise InvalidArgument.one("dns_record.value", f"{value} leads back to {name} "
                                          "(a CNAME loop, which dnsmasq refuses)")
            if s.scalar(select(DnsRecordRow.id).where(
                    DnsRecordRow.network_id == net.id, DnsRecordRow.name == name,
                    DnsRecordRow.type == kind, DnsRecordRow.value == value)) is not None:
                raise AlreadyExists("dns_record", f"the network already has {name} {kind} "
                                    f"{value[:60]}")
            count = s.scalar(select(func.count()).select_from(DnsRecordRow).where(
                DnsRecordRow.network_id == net.id)) or 0
            if count >= MAX_RECORDS_PER_NETWORK:
                raise ResourceExhausted("dns_record.network_id", f"a network holds at most "
                                        f"{MAX_RECORDS_PER_NETWORK} records")
            gen = shared.bump(s, net.router_id)
            row = DnsRecordRow(id=new_id(), tenant_id=tenant_id, network_id=net.id, name=name,
                               type=kind, value=value, generation=gen, error="",
                               created_at=utcnow())
            s.add(row)
            s.flush()
            return dns_record(row, shared.applied_generation(s, net.id))

        return self._db.write(tx)

    def get_dns_record(self, tenant_id: str, record_id: str) -> DnsRecord:
        def tx(s: Session) -> DnsRecord:
            row = shared.owned(s, DnsRecordRow, tenant_id, record_id, "DNS record")
            return dns_record(row, shared.applied_generation(s, row.network_id))

        return self._db.read(tx)

    def list_dns_records(self, tenant_id: TenantScope, page: PageRequest,
                         network_id: str = "") -> Page[DnsRecord]:
        def tx(s: Session) -> Page[DnsRecord]:
            stmt = of_tenant(select(DnsRecordRow), DnsRecordRow.tenant_id, tenant_id)
            if network_id:
                net = shared.network_row(s, tenant_id, network_id, "network_id")
                stmt = stmt.where(DnsRecordRow.network_id == net.id)
            return rows.paged_rows(s, stmt, DnsRecordRow, page, lambda r: dns_record(
                r, shared.applied_generation(s, r.network_id)))

        return self._db.read(tx)

    def delete_dns_record(self, tenant_id: str, record_id: str) -> str:
        """Deletes the record; returns the router that served it."""

        def tx(s: Session) -> str:
            row = shared.owned(s, DnsRecordRow, tenant_id, record_id, "DNS record")
            router_id = shared.network(s, row.network_id).router_id
            shared.bump(s, router_id)
            s.delete(row)
            return router_id

        return self._db.write(tx)
