"""Tables of VPCs (migration 0005) and network ACLs (0006). A VPC's tiers are
``networks`` rows with ``vpc_id`` set (and ``acl_id``: their list); its
router is the ``routers`` row with that ``vpc_id``, and its source-NAT
address the ``public_ips`` row (kind source_nat) with it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import CIDR, ID, IP, Base, StatusColumns


class VpcRow(Base):
    __tablename__ = "vpcs"
    __table_args__ = (Index("ix_vpcs_tenant_order", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(63))
    cidr: Mapped[str] = mapped_column(CIDR)
    domain: Mapped[str] = mapped_column(String(253))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class NetworkAclRow(Base):
    """A VPC's network ACL list (the built-in lists are not rows: see
    ``netmgr.model.vpc.BUILTIN_ACLS``)."""

    __tablename__ = "network_acls"
    __table_args__ = (Index("ix_network_acls_vpc_order", "vpc_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    vpc_id: Mapped[str] = mapped_column(ID, ForeignKey("vpcs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AclRuleRow(StatusColumns, Base):
    __tablename__ = "acl_rules"
    # The number is unique in its list: it is the evaluation order.
    __table_args__ = (UniqueConstraint("acl_id", "number", name="uq_acl_rules_acl_number"),)

    acl_id: Mapped[str] = mapped_column(ID, ForeignKey("network_acls.id", ondelete="CASCADE"))
    number: Mapped[int]
    action: Mapped[str] = mapped_column(String(8))
    direction: Mapped[str] = mapped_column(String(8))
    protocol: Mapped[str] = mapped_column(String(8))
    port: Mapped[int]
    port_end: Mapped[int]
    icmp_type: Mapped[int]
    icmp_code: Mapped[int]
    cidrs: Mapped[list[str]] = mapped_column(JSON)


class PrivateGatewayRow(StatusColumns, Base):
    """An extra VPC router interface on a provider VLAN (migration 0008)."""

    __tablename__ = "vpc_private_gateways"

    vpc_id: Mapped[str] = mapped_column(ID, ForeignKey("vpcs.id", ondelete="CASCADE"),
                                        index=True)
    # Unique: one interface per segment (networks' VLANs are checked by the store).
    vlan_id: Mapped[int] = mapped_column(unique=True)
    address: Mapped[str] = mapped_column(CIDR)
    gateway: Mapped[str] = mapped_column(IP)
    acl_id: Mapped[str] = mapped_column(ID)
    router_mac: Mapped[str] = mapped_column(String(17), unique=True)


class StaticRouteRow(StatusColumns, Base):
    """A VPC router route (migration 0008): cidr via next_hop."""

    __tablename__ = "vpc_static_routes"
    __table_args__ = (UniqueConstraint("vpc_id", "cidr", name="uq_vpc_static_routes_cidr"),)

    vpc_id: Mapped[str] = mapped_column(ID, ForeignKey("vpcs.id", ondelete="CASCADE"))
    cidr: Mapped[str] = mapped_column(CIDR)
    next_hop: Mapped[str] = mapped_column(IP)
