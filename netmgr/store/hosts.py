"""Hosts in the store (table ``tables.hosts``, migrations 0003 and 0014).

A compute agent registers its host at start (admin token): name, gRPC
address, fabric and capacity. Registering an existing name updates it, so an
agent that restarts (or moves) just registers again. A router agent
registers with role "router" and then heartbeats: netmgr places new
namespace routers on the live router host with the fewest
(``shared.pick_router_host``; the configured default host when none is
registered). A host silent past the grace is DOWN (``expire``): its routers
are assigned to live router hosts (same MACs and DHCP hosts: they are the
model's), each bumped so the reconciler makes it there; when the host
heartbeats again it is UP, and the reconciler removes the routers its agent
still holds but the model placed elsewhere. A compute agent heartbeats the
same way: silent past the grace, its host is DOWN, the router VM backend
deploys its router VMs on live compute hosts (same MACs, same DHCP hosts:
the model's) and, when the host is back, deletes the stale ones; its guests'
ports show the host DOWN (``binding_host_state``) but stay: the guests are
not netmgr's to move. Liveness uses netmgr's clock
(heartbeats against a grace of seconds); fencing never does.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from common.grpc_errors import NotFound
from netmgr.model import events as me
from netmgr.model.hosts import Host, HostSpec, check_host
from netmgr.model.validation import check_id
from netmgr.store import ipam, rows
from netmgr.store.base import Database, new_id
from netmgr.store.shared import bump, pick_router_host, zone_row
from netmgr.store.tables.audit import EventRow
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PortRow, RouterRow
from netmgr.store.tables.hosts import HostEventRow, HostRow
from netmgr.store.tables.redundancy import RouterRedundancyRow
from netmgr.store.tables.router_vms import RouterVmRow

log = logging.getLogger(__name__)

DEFAULT_GRACE = dt.timedelta(seconds=15)


def record_host_event(s: Session, host: str, kind: str, detail: str) -> None:
    """The one place a host's state change is recorded: a log line and a
    row (in the caller's transaction)."""
    log.warning("host %s: %s: %s", host, kind, detail)
    now = utcnow()
    s.add(HostEventRow(host=host, kind=kind, detail=detail, created_at=now))
    # ...and in the audit log (ListEvents --kind host --object <host ID>).
    host_id = s.scalar(select(HostRow.id).where(HostRow.name == host)) or ""
    s.add(EventRow(at=now, kind=me.KIND_HOST, tenant_id="", token_id="", method="",
                   object_id=host_id, code=kind.upper(),
                   detail=f"host {host}: {detail}"[:me.MAX_DETAIL]))


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    return t.replace(tzinfo=dt.UTC) if t is not None else None


def _host(row: HostRow, router_ids: tuple[str, ...] = ()) -> Host:
    return Host(row.id, row.name, row.address, row.fabric, row.vcpus, row.memory_mib,
                row.created_at.replace(tzinfo=dt.UTC), row.updated_at.replace(tzinfo=dt.UTC),
                role=row.role, state=row.state, heartbeat_at=_aware(row.heartbeat_at),
                router_ids=router_ids)


def _routers_on(s: Session, host: str) -> tuple[str, ...]:
    return tuple(s.scalars(select(RouterRow.id).where(RouterRow.host == host,
                                                      RouterRow.backend == "netns")
                           .order_by(RouterRow.id)).all())


def _move_redundant(s: Session, down: str, routers: tuple[str, ...]) -> list[str]:
    """The instances of redundant routers on host ``down`` (instance 0 on
    ``routers``, instance 1 wherever it is the peer) to a live host that
    holds neither instance: never both instances on one host. With none, the
    instance stays (the other one is master meanwhile). A moved pair gets a
    new sync VLAN: the orphaned instance on the silent host (an agent killed
    leaves its namespace and daemons running; keepalived holds it in FAULT
    once no agent listens) keeps the old one, and its sync address, to itself."""
    moved = []
    reds = [r for r in s.scalars(select(RouterRedundancyRow).where(or_(
        RouterRedundancyRow.router_id.in_(routers), RouterRedundancyRow.peer_host == down)))]
    for red in reds:
        router = s.get_one(RouterRow, red.router_id)
        other = red.peer_host if router.host == down else router.host
        target = pick_router_host(s, avoid=down, also_avoid=(other,))
        if target is None:
            record_host_event(s, down, "redundant-kept",
                              f"router {red.router_id}: no live host without its other "
                              f"instance ({other}), which serves")
            continue
        if router.host == down:
            router.host = target
        else:
            red.peer_host = target
        red.sync_vlan = ipam.allocate_vlan(s, rows.zone(zone_row(s, lock=True)))
        s.flush()
        bump(s, red.router_id)
        record_host_event(s, down, "router-moved", f"{red.router_id} -> {target} (redundant)")
        moved.append(red.router_id)
    return moved


class HostStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def register(self, h: HostSpec) -> Host:
        check_host(h)

        def tx(s: Session) -> Host:
            row = s.scalar(select(HostRow).where(HostRow.name == h.name))
            now = utcnow()
            if row is None:
                row = HostRow(id=new_id(), name=h.name, created_at=now, state="unknown")
                s.add(row)
            row.address, row.fabric, row.role = h.address, h.fabric, h.role
            row.vcpus, row.memory_mib, row.updated_at = h.vcpus, h.memory_mib, now
            s.flush()
            return _host(row, _routers_on(s, row.name))

        return self._db.write(tx)

    def heartbeat(self, name: str) -> Host:
        """The host is alive: UP (an event if it was not); NotFound if not registered."""

        def tx(s: Session) -> Host:
            row = s.scalar(select(HostRow).where(HostRow.name == name).with_for_update())
            if row is None:
                raise NotFound(f"host {name[:63]!r} is not registered")
            row.heartbeat_at = utcnow()
            if row.state != "up":
                record_host_event(s, name, "up", f"heartbeat (was {row.state})")
                row.state = "up"
            return _host(row, _routers_on(s, name))

        return self._db.write(tx)

    def expire(self, grace: dt.timedelta = DEFAULT_GRACE) -> list[str]:
        """Mark hosts silent past ``grace`` DOWN and move the namespace
        routers of router hosts to live ones; returns the routers moved (each
        bumped). A compute host's router VMs are the VM backend's to move."""
        deadline = utcnow() - grace

        def tx(s: Session) -> list[str]:
            moved: list[str] = []
            silent = s.scalars(select(HostRow).where(
                HostRow.state == "up", HostRow.heartbeat_at < deadline)
                .with_for_update()).all()
            for row in silent:
                row.state = "down"
                if row.role != "router":
                    self._compute_down(s, row)
                    continue
                routers = _routers_on(s, row.name)
                record_host_event(s, row.name, "down",
                                  f"no heartbeat since {row.heartbeat_at:%H:%M:%S}; "
                                  f"{len(routers)} routers to move")
                moved += _move_redundant(s, row.name, routers)
                for router_id in routers:
                    if s.get(RouterRedundancyRow, router_id) is not None:
                        continue  # _move_redundant's
                    target = pick_router_host(s, avoid=row.name)
                    if target is None:
                        record_host_event(s, row.name, "stranded",
                                          f"router {router_id}: no live router host")
                        continue
                    s.get_one(RouterRow, router_id).host = target
                    s.flush()
                    bump(s, router_id)
                    record_host_event(s, row.name, "router-moved", f"{router_id} -> {target}")
                    moved.append(router_id)
            return moved

        return self._db.write(tx) if self._db.read(lambda s: self._any_silent(s, deadline)) \
            else []

    @staticmethod
    def _compute_down(s: Session, row: HostRow) -> None:
        vms = s.scalar(select(func.count()).select_from(RouterVmRow)
                       .where(RouterVmRow.host == row.name)) or 0
        guests = s.scalar(select(func.count()).select_from(PortRow)
                          .where(PortRow.binding_host == row.name)) or 0
        record_host_event(s, row.name, "down",
                          f"no heartbeat since {row.heartbeat_at:%H:%M:%S}; {vms} router VMs "
                          f"to re-place; {guests} guest ports stay (their VMs are not moved)")

    @staticmethod
    def _any_silent(s: Session, deadline: dt.datetime) -> bool:
        return s.scalar(select(HostRow.id).where(
            HostRow.state == "up", HostRow.heartbeat_at < deadline).limit(1)) is not None

    def states(self) -> dict[str, str]:
        """Every registered host's state by name ("unknown", "up", "down")."""
        return dict(self._db.read(lambda s: s.execute(
            select(HostRow.name, HostRow.state)).all()))

    def router_hosts(self) -> dict[str, str]:
        """Registered router hosts that are not DOWN: name -> agent address."""
        return dict(self._db.read(lambda s: s.execute(
            select(HostRow.name, HostRow.address).where(
                HostRow.role == "router", HostRow.state != "down")).all()))

    def get(self, host_id: str) -> Host:
        check_id(host_id)

        def tx(s: Session) -> Host:
            row = s.get(HostRow, host_id)
            if row is None:
                raise NotFound(f"host {host_id} not found")
            return _host(row, _routers_on(s, row.name))

        return self._db.read(tx)

    def list(self) -> list[Host]:
        return self._db.read(
            lambda s: [_host(r, _routers_on(s, r.name))
                       for r in s.scalars(select(HostRow).order_by(HostRow.name))])

    def delete(self, host_id: str) -> None:
        check_id(host_id)

        def tx(s: Session) -> None:
            row = s.get(HostRow, host_id)
            if row is None:
                raise NotFound(f"host {host_id} not found")
            s.delete(row)

        self._db.write(tx)
