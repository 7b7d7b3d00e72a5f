"""What netmgr replicas share through the database (migration 0014):
the lease epoch of each shard of routers, and the create calls already
answered, by the client's request ID (``netmgr.store.leases``,
``netmgr.store.requests``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, Base


class ShardLeaseRow(Base):
    """Bumped in the transaction that takes the shard's lease: a later lease
    always has a higher epoch, whatever the replicas' clocks say."""

    __tablename__ = "shard_leases"

    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)


class CreateRequestRow(Base):
    """A create call answered, by (tenant, client request ID): its retry
    returns the same object. Rows older than the TTL are dropped."""

    __tablename__ = "create_requests"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(128))
    object_id: Mapped[str] = mapped_column(ID)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
