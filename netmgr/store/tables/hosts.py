"""The compute hosts table (migration 0003); see ``netmgr.store.hosts``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, String
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
