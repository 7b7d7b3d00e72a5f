"""Tables of the edge services: static NAT, port forwards, firewall rules,
egress policies (migration 0002). Tenant public IPs are rows of
``public_ips`` with kind ``tenant``.

Every rule row carries the router generation that last changed it and the
router's error for it, as ports do: the API derives PENDING/ACTIVE/ERROR.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, Base, StatusColumns

PUBLIC_IP_TENANT = "tenant"


class StaticNatRow(StatusColumns, Base):
    __tablename__ = "static_nats"
    __table_args__ = (Index("ix_static_nats_tenant_order", "tenant_id", "created_at", "id"),)

    network_id: Mapped[str] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    public_ip_id: Mapped[str] = mapped_column(
        ID, ForeignKey("public_ips.id", ondelete="CASCADE"), unique=True)
    port_id: Mapped[str] = mapped_column(ID, ForeignKey("ports.id", ondelete="CASCADE"),
                                         unique=True)


class PortForwardRow(StatusColumns, Base):
    __tablename__ = "port_forwards"
    __table_args__ = (Index("ix_port_forwards_tenant_order", "tenant_id", "created_at", "id"),)

    network_id: Mapped[str] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    public_ip_id: Mapped[str] = mapped_column(
        ID, ForeignKey("public_ips.id", ondelete="CASCADE"), index=True)
    protocol: Mapped[str] = mapped_column(String(8))
    public_port: Mapped[int]
    public_port_end: Mapped[int]
    port_id: Mapped[str] = mapped_column(ID, ForeignKey("ports.id", ondelete="CASCADE"),
                                         index=True)
    private_port: Mapped[int]
    private_port_end: Mapped[int]
    source_cidrs: Mapped[list[str]] = mapped_column(JSON)


class FirewallRuleRow(StatusColumns, Base):
    __tablename__ = "firewall_rules"
    __table_args__ = (Index("ix_firewall_rules_tenant_order", "tenant_id", "created_at", "id"),)

    # "ingress" (public_ip_id set) or "egress".
    direction: Mapped[str] = mapped_column(String(8))
    network_id: Mapped[str] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    public_ip_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("public_ips.id", ondelete="CASCADE"), index=True)
    protocol: Mapped[str] = mapped_column(String(8))
    port: Mapped[int]
    port_end: Mapped[int]
    icmp_type: Mapped[int]
    icmp_code: Mapped[int]
    cidrs: Mapped[list[str]] = mapped_column(JSON)


class LoadBalancerRow(StatusColumns, Base):
    __tablename__ = "load_balancers"
    __table_args__ = (Index("ix_load_balancers_tenant_order", "tenant_id", "created_at", "id"),)

    network_id: Mapped[str] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    public_ip_id: Mapped[str] = mapped_column(
        ID, ForeignKey("public_ips.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    public_port: Mapped[int]
    protocol: Mapped[str] = mapped_column(String(8))
    algorithm: Mapped[str] = mapped_column(String(16))
    private_port: Mapped[int]
    stickiness: Mapped[str] = mapped_column(String(8))
    # {"type", "path", "expect_status", "interval_ms", "rise", "fall"}
    health_check: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"port_id", "weight", "private_port"}]; members whose port is gone are
    # left out of the router's config.
    members: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # port_id -> [status, last check], as the router last reported.
    member_health: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_cidrs: Mapped[list[str]] = mapped_column(JSON)


class EgressPolicyRow(Base):
    """A network's default egress action; no row means allow."""

    __tablename__ = "egress_policies"

    network_id: Mapped[str] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True)
    default_deny: Mapped[bool]
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
