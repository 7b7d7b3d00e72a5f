"""Tables of VPCs (migration 0005). A VPC's tiers are ``networks`` rows with
``vpc_id`` set; its router is the ``routers`` row with that ``vpc_id``, and
its source-NAT address the ``public_ips`` row (kind source_nat) with it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.db import ID, Base


class VpcRow(Base):
    __tablename__ = "vpcs"
    __table_args__ = (Index("ix_vpcs_tenant_order", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(63))
    cidr: Mapped[str] = mapped_column(String(18))
    domain: Mapped[str] = mapped_column(String(253))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
