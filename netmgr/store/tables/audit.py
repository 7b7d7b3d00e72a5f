"""Quota limits and the audit event log.

A quota row is a zone-wide default (scope ``*``) or one tenant's override
(scope: its ID); no row means no limit. Events carry no foreign keys: the log
outlives the tenants and tokens it names, until the retention sweep.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, FetchedValue, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, Base

DEFAULT_SCOPE = "*"


class QuotaLimitRow(Base):
    __tablename__ = "quota_limits"

    scope: Mapped[str] = mapped_column(String(36), primary_key=True)
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    max_count: Mapped[int] = mapped_column(Integer)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_tenant_seq", "tenant_id", "seq"),
                      Index("ix_events_object_seq", "object_id", "seq"),
                      Index("ix_events_xid_seq", "xid", "seq"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[str] = mapped_column(ID)
    token_id: Mapped[str] = mapped_column(ID)
    method: Mapped[str] = mapped_column(String(128))
    object_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(32))
    # PostgreSQL: the writing transaction's ID, set by the database at insert
    # (migration 0018); NULL on SQLite.
    xid: Mapped[int | None] = mapped_column(BigInteger, nullable=True,
                                            server_default=FetchedValue())
    detail: Mapped[str] = mapped_column(String(512))
