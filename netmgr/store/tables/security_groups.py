"""Security groups and their rules; a port names its groups in
``ports.security_group_ids`` (``netmgr.store.tables.core.PortRow``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, Base


class SecurityGroupRow(Base):
    __tablename__ = "security_groups"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_security_groups_tenant_name"),
        Index("ix_security_groups_tenant_order", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    # A tenant is deleted once it owns no network: its groups go with it.
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class SecurityGroupRuleRow(Base):
    __tablename__ = "security_group_rules"
    __table_args__ = (
        Index("ix_security_group_rules_group_order", "security_group_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="CASCADE"))
    security_group_id: Mapped[str] = mapped_column(
        ID, ForeignKey("security_groups.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(8))
    ethertype: Mapped[str] = mapped_column(String(4))
    protocol: Mapped[str] = mapped_column(String(4))
    port_min: Mapped[int]
    port_max: Mapped[int]
    icmp_type: Mapped[int]
    icmp_code: Mapped[int]
    remote_cidr: Mapped[str] = mapped_column(String(43))
    # The store refuses to delete a group another group's rule names; the
    # cascade is for the tenant's deletion, which takes all its groups.
    remote_group_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("security_groups.id", ondelete="CASCADE"), nullable=True, index=True)
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
