"""DNS records of tenant networks (migration 0012) and VPCs (0020)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, Base, StatusColumns


class DnsRecordRow(StatusColumns, Base):
    __tablename__ = "dns_records"
    __table_args__ = (
        UniqueConstraint("network_id", "name", "type", "value", name="uq_dns_records_record"),
        Index("ix_dns_records_tenant_order", "tenant_id", "created_at", "id"),
    )

    # A network's record, or a VPC's (exactly one of the two).
    network_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), index=True, nullable=True)
    vpc_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("vpcs.id", ondelete="CASCADE"), index=True, nullable=True)
    name: Mapped[str] = mapped_column(String(253))
    type: Mapped[str] = mapped_column(String(8))
    value: Mapped[str] = mapped_column(Text)
