"""Compute hosts in the store, registered by compute agents (table:
``tables.hosts``, migration 0003).

A compute agent registers its host at start (admin token): name, gRPC
address, fabric and capacity. Registering an existing name updates it, so an
agent that restarts (or moves) just registers again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import NotFound
from netmgr.model.hosts import Host, HostSpec, check_host
from netmgr.model.validation import check_id
from netmgr.store.base import Database, new_id
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.hosts import HostRow


def _host(row: HostRow) -> Host:
    return Host(row.id, row.name, row.address, row.fabric, row.vcpus, row.memory_mib,
                row.created_at.replace(tzinfo=dt.UTC), row.updated_at.replace(tzinfo=dt.UTC))


class HostStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def register(self, h: HostSpec) -> Host:
        check_host(h)

        def tx(s: Session) -> Host:
            row = s.scalar(select(HostRow).where(HostRow.name == h.name))
            now = utcnow()
            if row is None:
                row = HostRow(id=new_id(), name=h.name, created_at=now)
                s.add(row)
            row.address, row.fabric = h.address, h.fabric
            row.vcpus, row.memory_mib, row.updated_at = h.vcpus, h.memory_mib, now
            s.flush()
            return _host(row)

        return self._db.write(tx)

    def get(self, host_id: str) -> Host:
        check_id(host_id)

        def tx(s: Session) -> Host:
            row = s.get(HostRow, host_id)
            if row is None:
                raise NotFound(f"host {host_id} not found")
            return _host(row)

        return self._db.read(tx)

    def list(self) -> list[Host]:
        return self._db.read(
            lambda s: [_host(r) for r in s.scalars(select(HostRow).order_by(HostRow.name))])

    def delete(self, host_id: str) -> None:
        check_id(host_id)

        def tx(s: Session) -> None:
            row = s.get(HostRow, host_id)
            if row is None:
                raise NotFound(f"host {host_id} not found")
            s.delete(row)

        self._db.write(tx)
