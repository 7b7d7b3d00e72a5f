"""What the repositories do inside a caller's transaction, shared by several:
tenant-scoped lookups, the router serving a network, the generation bump and
a new router row.

Lookups of tenant-owned rows take the caller's tenant ID and treat another
tenant's object exactly like a missing one, so existence never leaks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.orm import Session

from common.grpc_errors import NotFound
from netmgr.model import core as model
from netmgr.model.validation import check_id
from netmgr.store import ipam, rows
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import MacRow, NetworkRow, RouterRow, TenantRow, ZoneRow
from netmgr.store.tables.hosts import HostRow
from netmgr.store.tables.vpc import VpcRow

ZONE_ROW_ID = 1

# Values per IN list of a statement that reads many rows by key (far below
# SQLite's and PostgreSQL's limits on bound parameters).
IN_CHUNK = 500


def chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    """``ids`` in slices of at most ``IN_CHUNK``, one IN list each."""
    return [ids[i:i + IN_CHUNK] for i in range(0, len(ids), IN_CHUNK)]


class TenantOwned(Protocol):
    """A row a tenant owns."""

    @property
    def id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...


class NetworkRule(TenantOwned, Protocol):
    """A tenant's row on one network (a rule or a load balancer)."""

    @property
    def network_id(self) -> str: ...


OwnedT = TypeVar("OwnedT", bound=TenantOwned)
SelectT = TypeVar("SelectT", bound="Select[*tuple[Any, ...]]")


# Whose objects a read may see: one tenant's, or (None) every tenant's, for
# the admin's lists across tenants. Writes always take a tenant (a str).
TenantScope = str | None


def owned(s: Session, table: type[OwnedT], tenant_id: TenantScope, obj_id: str, what: str,
          field: str = "id") -> OwnedT:
    """The tenant's row ``obj_id`` of ``table``; NotFound ("<what> <id> not
    found") when missing or another tenant's (any tenant's for None)."""
    row = s.get(table, check_id(obj_id, field))
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"{what} {obj_id} not found")
    return row


def of_tenant(stmt: SelectT, column: Any, tenant_id: TenantScope) -> SelectT:
    """``stmt`` limited to one tenant's rows (all of them for None)."""
    return stmt if tenant_id is None else stmt.where(column == tenant_id)


def tenant_row(s: Session, tenant_id: str, field: str = "tenant_id") -> TenantRow:
    row = s.get(TenantRow, check_id(tenant_id, field))
    if row is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return row


def zone_row(s: Session, *, lock: bool = False, share: bool = False) -> ZoneRow:
    stmt = select(ZoneRow).where(ZoneRow.id == ZONE_ROW_ID)
    if lock:  # PostgreSQL: serialises VLAN and public IP allocation
        stmt = stmt.with_for_update()
    elif share:  # waits only for those (concurrent_alloc)
        stmt = stmt.with_for_update(read=True)
    return s.scalars(stmt).one()


def network_row(s: Session, tenant_id: TenantScope, network_id: str,
                field: str = "id") -> NetworkRow:
    return owned(s, NetworkRow, tenant_id, network_id, "network", field)


def usable_network_row(s: Session, tenant_id: TenantScope, network_id: str,
                       field: str = "id") -> NetworkRow:
    """A network the tenant may put ports on: its own, or a shared network
    open to it (another tenant's otherwise is a missing one)."""
    row = s.get(NetworkRow, check_id(network_id, field))
    if row is not None and (tenant_id is None or row.tenant_id == tenant_id or (
            row.shared and (not row.shared_tenant_ids or tenant_id in row.shared_tenant_ids))):
        return row
    raise NotFound(f"network {network_id} not found")


def vpc_row(s: Session, tenant_id: TenantScope, vpc_id: str, field: str = "id") -> VpcRow:
    return owned(s, VpcRow, tenant_id, vpc_id, "VPC", field)


def network(s: Session, network_id: str) -> model.Network:
    return rows.network(s.execute(
        rows.network_select().where(NetworkRow.id == network_id)).one())


def bump(s: Session, router_id: str) -> int:
    """Next desired generation of a router. On PostgreSQL the row lock this
    takes also serialises concurrent changes to the router's network."""
    # One round trip: the new value comes back from the UPDATE itself.
    gen = s.scalar(
        update(RouterRow)
        .where(RouterRow.id == router_id)
        .values(desired_generation=RouterRow.desired_generation + 1, updated_at=utcnow())
        .returning(RouterRow.desired_generation)
    )
    assert gen is not None
    return int(gen)


def bump_router_of(s: Session, network_id: str) -> tuple[str, int, int]:
    """``bump(s, router_of(s, network_id))`` in one round trip: (the router's
    ID, its next desired generation, the generation it has applied)."""
    # On the connection (Core): the ORM's bulk update path costs more than
    # the statement, and no RouterRow of this session needs refreshing.
    found = s.connection().execute(
        update(RouterRow)
        .where(RouterRow.id == select(RouterRow.id).join(NetworkRow, rows.ROUTER_OF_NETWORK)
               .where(NetworkRow.id == network_id).scalar_subquery())
        .values(desired_generation=RouterRow.desired_generation + 1, updated_at=utcnow())
        .returning(RouterRow.id, RouterRow.desired_generation, RouterRow.applied_generation)
    ).one()
    return str(found[0]), int(found[1]), int(found[2])


def router_of(s: Session, network_id: str) -> str:
    """The router serving a network: its own, or its VPC's for a tier."""
    router_id = s.scalar(select(RouterRow.id).join(NetworkRow, rows.ROUTER_OF_NETWORK)
                         .where(NetworkRow.id == network_id))
    assert router_id is not None, "every network has a router"
    return router_id


def router_network_ids(s: Session, router_id: str) -> list[str]:
    """The networks a router serves: its network, or its VPC's tiers."""
    return list(s.scalars(select(NetworkRow.id).join(RouterRow, rows.ROUTER_OF_NETWORK)
                          .where(RouterRow.id == router_id).order_by(NetworkRow.id)))


def routers_network_ids(s: Session, router_ids: Collection[str]) -> dict[str, list[str]]:
    """``router_network_ids`` of several routers in one statement (each
    router named, with no network when it serves none)."""
    out: dict[str, list[str]] = {r: [] for r in router_ids}
    for chunk in chunks(list(out)):
        for router_id, network_id in s.execute(
                select(RouterRow.id, NetworkRow.id).join(RouterRow, rows.ROUTER_OF_NETWORK)
                .where(RouterRow.id.in_(chunk)).order_by(NetworkRow.id)):
            out[router_id].append(network_id)
    return out


def applied_generation(s: Session, network_id: str | None) -> int:
    """The generation the router serving a network has applied (0: no network)."""
    if not network_id:
        return 0
    gen = s.scalar(select(RouterRow.applied_generation)
                   .where(RouterRow.id == router_of(s, network_id)))
    return int(gen or 0)


def vpc_router(s: Session, vpc_id: str) -> RouterRow:
    return s.scalars(select(RouterRow).where(RouterRow.vpc_id == vpc_id)).one()


def delete_rule(s: Session, table: type[NetworkRule], tenant_id: str, obj_id: str,
                what: str) -> tuple[str, int]:
    """Delete a tenant's rule; returns the router to notify and the generation
    of the change."""
    row = owned(s, table, tenant_id, obj_id, what)
    router_id = router_of(s, row.network_id)
    gen = bump(s, router_id)
    s.delete(row)
    return router_id, gen


@dataclasses.dataclass
class RouterPlacement:
    """Where new routers go: the backend (``netmgr.server`` sets it from
    --router-backend after the store opened) and, for namespaces, the host."""

    host: str
    backend: model.RouterBackend = model.RouterBackend.NETNS


def pick_router_host(s: Session, avoid: str = "",
                     also_avoid: Sequence[str] = ()) -> str | None:
    """The live registered router host with the fewest namespace routers
    (None: no router host registered and up; the configured default host then)."""
    live = s.scalars(select(HostRow.name).where(HostRow.role == "router", HostRow.state == "up",
                                                 HostRow.name.not_in((avoid, *also_avoid)))).all()
    if not live:
        return None
    counts = dict(s.execute(
        select(RouterRow.host, func.count()).where(RouterRow.host.in_(live))
        .group_by(RouterRow.host)).all())
    return min(live, key=lambda name: (counts.get(name, 0), name))


_INSERT_ROUTER = insert(RouterRow)
_INSERT_MAC = insert(MacRow)


def add_router(s: Session, placement: RouterPlacement, router_id: str, tenant_id: str,
               now: dt.datetime, *, network_id: str | None = None,
               vpc_id: str | None = None) -> None:
    """A new router (generation 1) of a network or of a VPC, with its two
    MACs claimed for it."""
    public_mac = ipam.allocate_mac(s)
    guest_mac = ipam.allocate_mac(s)
    while guest_mac == public_mac:
        guest_mac = ipam.allocate_mac(s)
    netns = placement.backend == model.RouterBackend.NETNS
    host = (pick_router_host(s) or placement.host) if netns else ""
    # Core inserts (every network create makes a router): the rows they
    # refer to (a VPC, a network) must be in the database first.
    s.flush()
    conn = s.connection()
    conn.execute(_INSERT_ROUTER, dict(
        id=router_id, tenant_id=tenant_id, network_id=network_id, vpc_id=vpc_id,
        backend=placement.backend.value, host=host,
        desired_generation=1, applied_generation=0, public_mac=public_mac,
        guest_mac=guest_mac, services=[], last_error="", reachable=True,
        created_at=now, updated_at=now))
    # Both MACs were seen free just now; their primary key guards a race
    # (the write is retried whole).
    conn.execute(_INSERT_MAC, [{"mac": mac, "router_id": router_id, "port_id": None}
                               for mac in (public_mac, guest_mac)])
