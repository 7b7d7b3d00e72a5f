"""Redundant routers: which routers have a second instance, where it runs,
its sync VLAN, which instance is preferred as master, and what each instance
reported (``netmgr.model.redundancy``).

Making a router redundant places its second instance on another router
host than its own (the least loaded), allocates a VLAN of the zone's
network range for the link between the two, and bumps the router's
generation: the reconciler then pushes both instances. A failover makes the
other instance the preferred one (a new generation: each instance's VRRP
priority changes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from common.grpc_errors import FailedPrecondition, InvalidArgument, Violation
from netmgr.model.core import RouterBackend
from netmgr.model.redundancy import ROLES, InstanceReport, Redundancy
from netmgr.store import ipam, rows, shared
from netmgr.store.base import Database
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import RouterRow
from netmgr.store.tables.redundancy import RouterRedundancyRow

EVENTS_KEPT = 20
# Each sync link is a VLAN of its own: the VRRP ID need not differ.
VIRTUAL_ROUTER_ID = 51


def _model(row: RouterRedundancyRow, host: str) -> Redundancy:
    return Redundancy(
        router_id=row.router_id, hosts=(host, row.peer_host), sync_vlan=row.sync_vlan,
        virtual_router_id=row.virtual_router_id, preferred=row.preferred,
        instances=tuple(InstanceReport(**{k: v for k, v in r.items()
                                          if k in InstanceReport.__slots__})
                        for r in row.instances),
        events=tuple(row.events))


class RedundancyStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # The hosts netmgr has router agents on (netmgr.server sets them).
        self.hosts: tuple[str, ...] = ()
        # The live compute hosts a router VM may run on (the VM backend's:
        # netmgr.server sets it when it runs one).
        self.compute_hosts: Callable[[], Sequence[str]] = lambda: ()

    def _two_compute_hosts(self, field: str) -> list[str]:
        """The live compute hosts, at least two (a router VM on each)."""
        live = sorted(set(self.compute_hosts()))
        if len(live) < 2:
            named = ", ".join(h[:64] for h in live[:1]) or "none"
            raise FailedPrecondition(
                f"{field}: the zone has {len(live)} live compute host(s) ({named}); the two "
                "router VMs of a redundant router need two compute hosts")
        return live

    def check_redundant(self, vpc_id: str, host: str, field: str = "network.redundant",
                        backend: RouterBackend = RouterBackend.NETNS) -> None:
        """What makes a new network's (or VPC's: ``field`` ``vpc.redundant``)
        router redundant possible, checked before it is created."""
        if vpc_id:
            raise FailedPrecondition(
                f"{field}: a tier's router is its VPC's (UpdateVpc with redundant, or "
                "RouterRedundancyService with vpc_id)")
        if backend == RouterBackend.VM:
            self._two_compute_hosts(field)
            return
        if not [h for h in self.hosts if h != host]:
            raise FailedPrecondition(
                f"{field}: the zone has one router host ({host[:64]}); two "
                "instances need two hosts (netmgr's --agent HOST=TARGET, repeatable)")

    # ------------------------------------------------------------ lookups

    @staticmethod
    def _router_row(s: Session, tenant_id: str, network_id: str, vpc_id: str) -> RouterRow:
        if bool(network_id) == bool(vpc_id):
            raise InvalidArgument([Violation("network_id", "give a network_id or a vpc_id")])
        if vpc_id:
            vpc = shared.vpc_row(s, tenant_id, vpc_id, "vpc_id")
            row = s.scalar(select(RouterRow).where(RouterRow.vpc_id == vpc.id))
        else:
            net = shared.network_row(s, tenant_id, network_id, "network_id")
            if net.vpc_id:
                raise FailedPrecondition(
                    f"network {net.id} is a tier of VPC {net.vpc_id}: the VPC's router is "
                    "redundant or not (use vpc_id)")
            row = s.get(RouterRow, shared.router_of(s, net.id))
        assert row is not None
        return row

    def get(self, router_id: str) -> Redundancy | None:
        # One statement: the reconciler asks at every push, and nearly every
        # router is single (no row).
        def tx(s: Session) -> Redundancy | None:
            found = s.execute(select(RouterRedundancyRow, RouterRow.host)
                              .join(RouterRow, RouterRow.id == RouterRedundancyRow.router_id)
                              .where(RouterRedundancyRow.router_id == router_id)).first()
            return _model(found[0], found[1]) if found is not None else None

        return self._db.read_statement(tx)

    def of_routers(self, router_ids: Sequence[str]) -> dict[str, Redundancy]:
        """The redundancy of each of these routers that is redundant: one
        statement for a page of a listing rather than one per router."""
        ids = list(router_ids)

        def tx(s: Session) -> dict[str, Redundancy]:
            out: dict[str, Redundancy] = {}
            for chunk in shared.chunks(ids):
                found = s.execute(select(RouterRedundancyRow, RouterRow.host)
                                  .join(RouterRow, RouterRow.id == RouterRedundancyRow.router_id)
                                  .where(RouterRedundancyRow.router_id.in_(chunk)))
                out.update((row.router_id, _model(row, host)) for row, host in found)
            return out

        return self._db.read_statement(tx) if ids else {}

    def of(self, tenant_id: str, network_id: str, vpc_id: str) -> tuple[str, Redundancy | None]:
        """(router ID, its redundancy) of a tenant's network or VPC."""
        def tx(s: Session) -> tuple[str, Redundancy | None]:
            router = self._router_row(s, tenant_id, network_id, vpc_id)
            row = s.get(RouterRedundancyRow, router.id)
            return router.id, _model(row, router.host) if row is not None else None

        return self._db.read(tx)

    def all(self) -> list[Redundancy]:
        def tx(s: Session) -> list[Redundancy]:
            out = s.execute(select(RouterRedundancyRow, RouterRow.host)
                            .join(RouterRow, RouterRow.id == RouterRedundancyRow.router_id))
            return [_model(row, host) for row, host in out]

        return self._db.read(tx)

    # ------------------------------------------------------------ changes

    def set_redundancy(self, tenant_id: str, network_id: str, vpc_id: str, redundant: bool,
                       hosts: Sequence[str] | None = None) -> tuple[str, Redundancy | None]:
        """Make the router of a network or VPC redundant (or single again);
        ``hosts``: the router hosts netmgr has agents on (default: ``self.hosts``)."""
        hosts = self.hosts if hosts is None else hosts

        def tx(s: Session) -> tuple[str, Redundancy | None]:
            router = self._router_row(s, tenant_id, network_id, vpc_id)
            row = s.get(RouterRedundancyRow, router.id)
            if not redundant:
                if row is not None:
                    s.execute(delete(RouterRedundancyRow)
                              .where(RouterRedundancyRow.router_id == router.id))
                    shared.bump(s, router.id)
                return router.id, None
            if row is not None:
                return router.id, _model(row, router.host)
            if router.backend == RouterBackend.VM.value:
                # Instance 1's VM: on a compute host other than instance 0's
                # (the VM backend places it and keeps peer_host up to date).
                others = [h for h in self._two_compute_hosts("redundant") if h != router.host]
            else:
                others = sorted(h for h in set(hosts) if h != router.host)
            if not others:
                raise FailedPrecondition(
                    f"redundant: the zone has one router host ({router.host[:64]}); two "
                    "instances need two hosts (netmgr's --agent HOST=TARGET, repeatable)")
            peer = min(others, key=lambda h: (_load(s, h), h))
            zone = rows.zone(shared.zone_row(s, lock=True))
            now = utcnow()
            row = RouterRedundancyRow(
                router_id=router.id, peer_host=peer, sync_vlan=ipam.allocate_vlan(s, zone),
                virtual_router_id=VIRTUAL_ROUTER_ID, preferred=0, instances=[], events=[],
                created_at=now, updated_at=now)
            s.add(row)
            shared.bump(s, router.id)
            s.flush()
            return router.id, _model(row, router.host)

        return self._db.write(tx)

    def failover(self, tenant_id: str, network_id: str, vpc_id: str) -> tuple[str, Redundancy]:
        """The other instance preferred: the master moves to it."""

        def tx(s: Session) -> tuple[str, Redundancy]:
            router = self._router_row(s, tenant_id, network_id, vpc_id)
            row = s.get(RouterRedundancyRow, router.id)
            if row is None:
                raise FailedPrecondition(
                    f"router {router.id} is not redundant: there is no other instance to "
                    "fail over to")
            master = _model(row, router.host).master()
            target = 1 - (master if master is not None else row.preferred)
            row.preferred = target
            row.events = _events(row.events, [
                f"failover requested: instance {target} ({(router.host, row.peer_host)[target]})"
                " preferred as master"])
            row.updated_at = utcnow()
            shared.bump(s, router.id)
            s.flush()
            return router.id, _model(row, router.host)

        return self._db.write(tx)

    def record_instance(self, router_id: str, report: InstanceReport) -> None:
        def tx(s: Session) -> None:
            row = s.get(RouterRedundancyRow, router_id)
            if row is None:
                return
            role = report.role if report.role in ROLES else ""
            new = dataclasses.asdict(dataclasses.replace(report, role=role))
            kept = [r for r in row.instances if r.get("instance") != report.instance]
            if new in row.instances:
                return
            row.instances = sorted([*kept, new], key=lambda r: int(r["instance"]))
            row.updated_at = utcnow()

        self._db.write(tx)

    def add_events(self, router_id: str, events: Sequence[str]) -> None:
        if not events:
            return

        def tx(s: Session) -> None:
            row = s.get(RouterRedundancyRow, router_id)
            if row is not None:
                row.events = _events(row.events, events)
                row.updated_at = utcnow()

        self._db.write(tx)


def _events(old: list[Any], new: Sequence[str]) -> list[str]:
    stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    return [*old, *(f"{stamp} {e}" for e in new)][-EVENTS_KEPT:]


def _load(s: Session, host: str) -> int:
    """Router instances on ``host``."""
    return int(s.scalar(select(func.count()).where(RouterRow.host == host)) or 0) + int(
        s.scalar(select(func.count()).where(RouterRedundancyRow.peer_host == host)) or 0)

