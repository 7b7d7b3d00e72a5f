"""Routers in the store: what the API shows of them, the snapshot of
everything one serves (what the reconciler pushes), and what their agents
report back.

A router is created with its network or VPC (``shared.add_router``); its
``desired_generation`` moves with every change to what it serves, its
``applied_generation`` with its agent's reports.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from common.grpc_errors import NotFound
from netmgr.model import core as model
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import check_id
from netmgr.store import events, rows, shared, vpn
from netmgr.store.base import Database
from netmgr.store.dns import records_of
from netmgr.store.edge_router_view import edge_snapshot
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import NetworkRow, PortRow, PublicIpRow, RouterRow
from netmgr.store.tables.dns import DnsRecordRow
from netmgr.store.tables.edge import StaticNatRow
from netmgr.store.tables.keypairs import KeyPairRow
from netmgr.store.vpcs import vpc_snapshot

log = logging.getLogger(__name__)

_PLACED_ROUTERS = select(RouterRow.id, RouterRow.host, RouterRow.backend,
                         RouterRow.desired_generation).order_by(RouterRow.created_at,
                                                                RouterRow.id)

_ROUTERS_BEHIND = select(RouterRow.id).where(
    RouterRow.applied_generation < RouterRow.desired_generation)


def _tenant_router(s: Session, tenant_id: str, router_id: str) -> model.Router:
    r = s.execute(rows.router_select().where(
        RouterRow.id == check_id(router_id), RouterRow.tenant_id == tenant_id)).first()
    if r is None:
        raise NotFound(f"router {router_id} not found")
    return rows.router(r)


def _ssh_keys(s: Session, net_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """port ID -> (name, public key) of its key pair, for the router's metadata."""
    return {port_id: (name, key) for port_id, name, key in s.execute(
        select(PortRow.id, KeyPairRow.name, KeyPairRow.public_key)
        .join(KeyPairRow, KeyPairRow.id == PortRow.ssh_key_pair_id)
        .where(PortRow.network_id.in_(net_ids)))}


class RouterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------------ API

    def get_router(self, tenant_id: str, router_id: str) -> model.Router:
        return self._db.read(lambda s: _tenant_router(s, tenant_id, router_id))

    def restart_router(self, tenant_id: str, router_id: str) -> model.Router:
        """Bump the router's generation for a rebuild, so that it reads
        PROVISIONING until the rebuilt router has applied it."""

        def tx(s: Session) -> model.Router:
            _tenant_router(s, tenant_id, router_id)
            shared.bump(s, router_id)
            return rows.router(s.execute(
                rows.router_select().where(RouterRow.id == router_id)).one())

        return self._db.write(tx)

    def list_routers(self, tenant_id: TenantScope, page: PageRequest) -> Page[model.Router]:
        stmt = of_tenant(rows.router_select(), RouterRow.tenant_id, tenant_id)
        return self._db.read(lambda s: rows.paged(s, stmt, RouterRow, page, rows.router))

    # ----------------------------------------------------------- reconciler

    def list_routers_all(self) -> list[model.Router]:
        """Every router of every tenant (for the reconciler)."""
        stmt = rows.router_select().order_by(RouterRow.created_at, RouterRow.id)
        return self._db.read(lambda s: [rows.router(r) for r in s.execute(stmt)])

    def placed_routers(self) -> list[model.PlacedRouter]:
        """Every router's host, backend and desired generation: four columns
        read as plain rows (a resync reads them every 2 s; whole routers with
        their public IPs cost several times more)."""

        def tx(s: Session) -> list[model.PlacedRouter]:
            return [model.PlacedRouter(r.id, r.host, model.RouterBackend(r.backend),
                                       int(r.desired_generation))
                    for r in s.connection().execute(_PLACED_ROUTERS)]

        return self._db.read(tx)

    def routers_behind(self) -> list[str]:
        """The routers whose last recorded applied generation is older than
        their desired one (a shard taken over: the changes its last holder
        had not pushed)."""
        def tx(s: Session) -> list[str]:
            return [r.id for r in s.connection().execute(_ROUTERS_BEHIND)]

        return self._db.read(tx)

    def router_snapshot(self, router_id: str) -> model.RouterSnapshot:
        """The router and everything it serves, from one consistent read."""

        def tx(s: Session) -> model.RouterSnapshot:
            r = s.execute(rows.router_select().where(RouterRow.id == router_id)).first()
            if r is None:
                raise NotFound(f"router {router_id} not found")
            router = rows.router(r)
            net_ids = shared.router_network_ids(s, router.id)
            networks = tuple(rows.network(n) for n in s.execute(
                rows.network_select().where(NetworkRow.id.in_(net_ids))))
            ports = tuple(rows.port(p) for p in s.execute(
                rows.port_select().where(PortRow.network_id.in_(net_ids))
                .order_by(PortRow.created_at, PortRow.id)))
            return model.RouterSnapshot(router=router, networks=networks, ports=ports,
                                        zone=rows.zone(shared.zone_row(s)),
                                        edge=edge_snapshot(s, net_ids),
                                        vpc=vpc_snapshot(s, router),
                                        vpn=vpn.tunnels(s, net_ids, self._db.secrets),
                                        ssh_keys=_ssh_keys(s, net_ids),
                                        dns_records=records_of(s, net_ids, router.vpc_id))

        return self._db.read(tx)

    def guest_metadata_parts(self, port_id: str) -> tuple[str, str, tuple[str, str] | None]:
        """(zone name, public IP by static NAT or "", key pair (name, public
        key) or None) of one port, for a metadata delta: one small read."""

        def tx(s: Session) -> tuple[str, str, tuple[str, str] | None]:
            public = s.scalar(select(PublicIpRow.ip).join(
                StaticNatRow, StaticNatRow.public_ip_id == PublicIpRow.id)
                .where(StaticNatRow.port_id == port_id))
            key = s.execute(select(KeyPairRow.name, KeyPairRow.public_key)
                            .join(PortRow, PortRow.ssh_key_pair_id == KeyPairRow.id)
                            .where(PortRow.id == port_id)).first()
            return (shared.zone_row(s).name, public or "",
                    (str(key[0]), str(key[1])) if key else None)

        return self._db.read(tx)

    def router_head(self, router_id: str) -> tuple[str, int, str]:
        """(host, desired generation, backend) of a router: one row, for the
        delta path."""

        def tx(s: Session) -> tuple[str, int, str]:
            r = s.execute(select(RouterRow.host, RouterRow.desired_generation,
                                 RouterRow.backend).where(RouterRow.id == router_id)).first()
            if r is None:
                raise NotFound(f"router {router_id} not found")
            return r[0], int(r[1]), str(r[2])

        return self._db.read(tx)

    def record_router_status(
        self,
        router_id: str,
        *,
        applied_generation: int,
        services: Sequence[model.ServiceHealth],
        last_error: str,
        port_errors: Mapping[str, str],
        reachable: bool,
    ) -> None:
        """Store what the router's agent reports (``record_router_statuses``)."""
        self.record_router_statuses([model.RouterReport(
            router_id, applied_generation, tuple(services), last_error, port_errors, reachable)])

    def record_router_statuses(self, reports: Sequence[model.RouterReport]) -> None:
        """Store what agents report, in one transaction (a resync reports
        every router of a host: one write each queued 1,000 writes on
        SQLite's lock after an agent restart). The applied generation is
        taken as reported, even lower than before (an agent that lost its
        state holds less, and must be re-pushed). Routers deleted meanwhile
        are ignored; a report that repeats what is stored changes nothing,
        its update time included (``write_if_changed``)."""
        if not reports:
            return

        def tx(s: Session) -> None:
            ids = [r.router_id for r in reports]
            rows = {row.id: row for row in
                    s.scalars(select(RouterRow).where(RouterRow.id.in_(ids)))}
            latest: dict[str, model.RouterReport] = {}
            for report in reports:
                row = rows.get(report.router_id)
                if row is None:
                    log.debug("status for deleted router %s ignored", report.router_id)
                    continue
                _record(s, row, report)
                latest[row.id] = report
            _record_object_errors(s, [(rows[r], report) for r, report in latest.items()])

        self._db.write_if_changed(tx)

    def record_edge_delta_applied(self, router_id: str, applied_generation: int) -> None:
        """The router applied an edge delta: its generation moves on (services,
        ports and other objects are as the last full status said)."""

        def tx(s: Session) -> None:
            row = s.get(RouterRow, router_id)
            if row is None:
                return
            row.applied_generation = max(row.applied_generation, applied_generation)
            row.last_error = ""
            row.reachable = True
            row.updated_at = utcnow()

        self._db.write(tx)

    def mark_router_unreachable(self, router_id: str, error: str) -> None:
        self.mark_routers_unreachable([router_id], error)

    def mark_routers_unreachable(self, router_ids: Sequence[str], error: str) -> None:
        """Their agent does not answer: shown on each, in one transaction."""
        if not router_ids:
            return

        def tx(s: Session) -> None:
            for row in s.scalars(select(RouterRow).where(RouterRow.id.in_(list(router_ids)))):
                if row.reachable or row.last_error != error:
                    before = events.router_state(row)
                    row.reachable = False
                    row.last_error = error
                    row.updated_at = utcnow()
                    events.router_state_changed(s, row, before)

        self._db.write_if_changed(tx)


def _record(s: Session, row: RouterRow, report: model.RouterReport) -> None:
    """Set on ``row`` only what differs from ``report``; an event when its
    state moved (``events.router_state_changed``)."""
    before, first = events.router_state(row), row.applied_generation == 0
    changed = False
    for name, value in (("applied_generation", report.applied_generation),
                        ("services", [dataclasses.asdict(h) for h in report.services]),
                        ("last_error", report.last_error), ("reachable", report.reachable)):
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    if changed:
        row.updated_at = utcnow()
        events.router_state_changed(s, row, before, first and report.applied_generation > 0)


def _record_object_errors(s: Session,
                          reported: Sequence[tuple[RouterRow, model.RouterReport]]) -> None:
    """The reported routers' ports' and DNS records' errors, set where they
    differ: a few statements for them all (a resync reports hundreds of
    routers at once), not three per router. A router that reports no error
    only has its objects that hold one read (to clear them)."""
    if not reported:
        return
    report_of = {row.id: report for row, report in reported}
    nets_of = shared.routers_network_ids(s, list(report_of))
    owner = {net: router_id for router_id, nets in nets_of.items() for net in nets}
    vpc_owner = {row.vpc_id: row.id for row, _ in reported if row.vpc_id}
    for with_errors in (True, False):
        for chunk in shared.chunks([r for r in report_of
                              if bool(report_of[r].port_errors) == with_errors]):
            ports = select(PortRow).where(
                PortRow.network_id.in_([n for r in chunk for n in nets_of[r]]))
            if not with_errors:
                ports = ports.where(PortRow.error != "")  # only errors to clear
            for port in s.scalars(ports):
                error = report_of[owner[port.network_id]].port_errors.get(port.id, "")
                if port.error != error:
                    port.error = error
        for chunk in shared.chunks([r for r in report_of
                              if bool(report_of[r].record_errors) == with_errors]):
            vpcs = [v for v, r in vpc_owner.items() if r in chunk]
            served = DnsRecordRow.network_id.in_([n for r in chunk for n in nets_of[r]])
            records = select(DnsRecordRow).where(
                or_(served, DnsRecordRow.vpc_id.in_(vpcs)) if vpcs else served)
            if not with_errors:
                records = records.where(DnsRecordRow.error != "")
            for record in s.scalars(records):
                router_id = owner.get(record.network_id or "") or vpc_owner[record.vpc_id or ""]
                error = report_of[router_id].record_errors.get(record.id, "")
                if record.error != error:
                    record.error = error
