"""The hosts table (migration 0003; role, state and heartbeat: 0014) and the
host events (0014); see ``netmgr.store.hosts``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, Base


class HostRow(Base):
    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    fabric: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[int]
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # "compute" or "router" (a router agent's host: namespace routers go there).
    role: Mapped[str] = mapped_column(String(16), server_default="compute")
    # "unknown" (never heartbeated), "up", "down".
    state: Mapped[str] = mapped_column(String(16), server_default="unknown")
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class HostEventRow(Base):
    """A host's state change (``netmgr.store.hosts.record_host_event``)."""

    __tablename__ = "host_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
