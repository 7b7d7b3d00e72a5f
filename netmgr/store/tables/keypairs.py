"""Tenant SSH key pairs (the public half only); a port names one in
``ports.ssh_key_pair_id`` (``netmgr.store.tables.core.PortRow``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, Base


class KeyPairRow(Base):
    __tablename__ = "ssh_key_pairs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_ssh_key_pairs_tenant_name"),
        Index("ix_ssh_key_pairs_tenant_order", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    # A tenant is deleted once it owns no network: its key pairs go with it.
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    key_type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
