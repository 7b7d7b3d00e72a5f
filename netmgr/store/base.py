"""The store's foundation: engine, one-transaction-per-call helpers, lookups.

Writes are retried whole when they hit a unique constraint (a concurrent
writer took the same VLAN, IP or MAC first); a retry re-reads and picks the
next free value, or reports ALREADY_EXISTS if the user asked for that value.
Lookups of tenant-owned rows take the caller's tenant ID and treat another
tenant's object exactly like a missing one, so existence never leaks.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.grpc_errors import Aborted, NotFound
from netmgr.model import core as model
from netmgr.model.validation import check_id, check_zone
from netmgr.store import rows
from netmgr.store.tables import core as db
from netmgr.store.tables.core import NetworkRow, RouterRow, TenantRow, ZoneRow, utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_ATTEMPTS = 8
ZONE_ROW_ID = 1

DEFAULT_ZONE = model.Zone(
    name="zone1",
    public_cidr="203.0.113.0/24",
    public_gateway="203.0.113.1",
    public_pool_start="203.0.113.10",
    public_pool_end="203.0.113.250",
    vlan_min=100,
    vlan_max=999,
    upstream_dns=("198.51.100.53",),
    domain_suffix="cloud.internal",
)


def new_id() -> str:
    return str(uuid.uuid4())


def zone_columns(zone: model.Zone) -> dict[str, Any]:
    cols = dataclasses.asdict(zone)
    cols["upstream_dns"] = list(zone.upstream_dns)
    return cols


class StoreBase:
    """Engine, transactions and the lookups every part of the store shares."""

    def __init__(
        self,
        url: str,
        *,
        zone_defaults: model.Zone = DEFAULT_ZONE,
        default_host: str = "local",
        pool_size: int = 16,
    ) -> None:
        self._engine = db.make_engine(url, pool_size=pool_size)
        self._writer = db.writer(self._engine)
        self.default_host = default_host
        # Backend of new routers (netmgr.server sets it from --router-backend).
        self.default_backend = model.RouterBackend.NETNS
        db.upgrade(self._engine)
        self._ensure_zone(check_zone(zone_defaults))

    def close(self) -> None:
        self._engine.dispose()

    # ---------------------------------------------------------- transactions

    def _read(self, fn: Callable[[Session], T]) -> T:
        with Session(self._engine) as s, s.begin():
            return fn(s)

    def _write(self, fn: Callable[[Session], T]) -> T:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with Session(self._writer) as s, s.begin():
                    return fn(s)
            except IntegrityError as e:
                # A concurrent writer took a value we picked: start over.
                log.info("write collided (attempt %d): %s", attempt + 1, e.orig)
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise Aborted("the change kept colliding with concurrent changes; retry it")

    def _ensure_zone(self, defaults: model.Zone) -> None:
        def tx(s: Session) -> None:
            if s.get(ZoneRow, ZONE_ROW_ID) is None:
                s.add(ZoneRow(id=ZONE_ROW_ID, updated_at=utcnow(), **zone_columns(defaults)))

        self._write(tx)

    # --------------------------------------------------------------- lookups

    def _tenant_row(self, s: Session, tenant_id: str, field: str = "tenant_id") -> TenantRow:
        row = s.get(TenantRow, check_id(tenant_id, field))
        if row is None:
            raise NotFound(f"tenant {tenant_id} not found")
        return row

    def _zone_row(self, s: Session, *, lock: bool = False) -> ZoneRow:
        stmt = select(ZoneRow).where(ZoneRow.id == ZONE_ROW_ID)
        if lock:  # PostgreSQL: serialises VLAN and public IP allocation
            stmt = stmt.with_for_update()
        row = s.scalars(stmt).one()
        return row

    def _network_row(self, s: Session, tenant_id: str, network_id: str,
                     field: str = "id") -> NetworkRow:
        row = s.get(NetworkRow, check_id(network_id, field))
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"network {network_id} not found")
        return row

    def _network(self, s: Session, network_id: str) -> model.Network:
        return rows.network(s.execute(
            rows.network_select().where(NetworkRow.id == network_id)).one())

    def _bump(self, s: Session, router_id: str) -> int:
        """Next desired generation of a router. On PostgreSQL the row lock this
        takes also serialises concurrent changes to the router's network."""
        s.execute(
            update(RouterRow)
            .where(RouterRow.id == router_id)
            .values(desired_generation=RouterRow.desired_generation + 1, updated_at=utcnow())
        )
        gen = s.scalar(select(RouterRow.desired_generation).where(RouterRow.id == router_id))
        assert gen is not None
        return gen

    def _router_of(self, s: Session, network_id: str) -> str:
        """The router serving a network: its own, or its VPC's for a tier."""
        router_id = s.scalar(select(RouterRow.id).join(NetworkRow, rows.ROUTER_OF_NETWORK)
                             .where(NetworkRow.id == network_id))
        assert router_id is not None, "every network has a router"
        return router_id

    def _router_network_ids(self, s: Session, router_id: str) -> list[str]:
        """The networks a router serves: its network, or its VPC's tiers."""
        return list(s.scalars(select(NetworkRow.id).join(RouterRow, rows.ROUTER_OF_NETWORK)
                              .where(RouterRow.id == router_id).order_by(NetworkRow.id)))

