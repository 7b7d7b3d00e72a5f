"""Core tables of the network manager (SQLAlchemy 2 ORM): tenants, tokens,
the zone, networks, routers, ports, MACs and public IPs.

Unique constraints are the real guard of every allocation (VLAN ID, public
IP, port IP per network, MAC globally, host name per network): the store
retries a transaction that hits one (``netmgr.store.base.Database``).
The schema is created by Alembic (``netmgr/store/migrations``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import CIDR, ID, IP, MAC, Base, StatusColumns


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


class TokenRow(Base):
    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_tenant_order", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    # Only the SHA-256 of the bearer secret is kept (hex).
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # None: never expires.
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # Read-only: Get/List/Watch calls only.
    read_only: Mapped[bool] = mapped_column(Boolean, server_default=false())


class ZoneRow(Base):
    """The one zone (id 1), filled from the server config on first start."""

    __tablename__ = "zone"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    public_cidr: Mapped[str] = mapped_column(CIDR)
    public_gateway: Mapped[str] = mapped_column(IP)
    public_pool_start: Mapped[str] = mapped_column(IP)
    public_pool_end: Mapped[str] = mapped_column(IP)
    vlan_min: Mapped[int]
    vlan_max: Mapped[int]
    upstream_dns: Mapped[list[str]] = mapped_column(JSON)
    domain_suffix: Mapped[str] = mapped_column(String(253))
    # Migration 0009: private gateways' VLAN range (0, 0: none), reserved VLANs.
    private_gateway_vlan_min: Mapped[int] = mapped_column(default=0)
    private_gateway_vlan_max: Mapped[int] = mapped_column(default=0)
    reserved_vlans: Mapped[list[int]] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # IPv6 and routed networks (migration 0017); "" and 0: none.
    ipv6_pool: Mapped[str] = mapped_column(CIDR, default="", server_default="")
    routed_pool: Mapped[str] = mapped_column(CIDR, default="", server_default="")
    public_cidr6: Mapped[str] = mapped_column(CIDR, default="", server_default="")
    public_gateway6: Mapped[str] = mapped_column(IP, default="", server_default="")
    bgp_asn: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # [{"address": ..., "asn": ...}]
    bgp_peers: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, server_default=text("'[]'"))


class NetworkRow(Base):
    __tablename__ = "networks"
    __table_args__ = (Index("ix_networks_tenant_order", "tenant_id", "created_at", "id"),
                      Index("ix_networks_router_mac", "router_mac", unique=True),
                      Index("ix_networks_ipv6_cidr", "ipv6_cidr", unique=True))

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(63))
    cidr: Mapped[str] = mapped_column(CIDR)
    gateway: Mapped[str] = mapped_column(IP)
    domain: Mapped[str] = mapped_column(String(253))
    dns_servers: Mapped[list[str]] = mapped_column(JSON)
    domain_search: Mapped[list[str]] = mapped_column(JSON)
    mtu: Mapped[int]
    lease_seconds: Mapped[int]
    vlan_id: Mapped[int] = mapped_column(unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # VPC tiers (0005): the VPC, and the MAC of the VPC router's interface
    # on this tier (each tier its own; claimed in mac_addresses).
    vpc_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("vpcs.id"), index=True, default=None)
    router_mac: Mapped[str | None] = mapped_column(MAC, default=None)
    # A tier's network ACL list (0006): a network_acls row or a built-in
    # list's fixed ID, so no foreign key; NULL is default_allow.
    acl_id: Mapped[str | None] = mapped_column(ID, default=None)
    # A shared network (0015): other tenants may put ports on it (the listed
    # ones; [] for all).
    shared: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    shared_tenant_ids: Mapped[list[str]] = mapped_column(
        JSON, server_default=text("'[]'"), default=list)
    # IPv6 (0017): the /64 (NULL: none; unique in the zone, for it is routed)
    # and its mode; routed IPv4 (no source NAT).
    ipv6_cidr: Mapped[str | None] = mapped_column(CIDR, default=None)
    ipv6_mode: Mapped[str] = mapped_column(String(24), default="", server_default="")
    routed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RouterRow(Base):
    __tablename__ = "routers"
    __table_args__ = (Index("ix_routers_tenant_order", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    # An isolated network's router (network_id) or a VPC's (vpc_id, 0005).
    network_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), unique=True
    )
    vpc_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("vpcs.id", ondelete="CASCADE"), unique=True, default=None
    )
    backend: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(253))
    desired_generation: Mapped[int]
    applied_generation: Mapped[int]
    public_mac: Mapped[str] = mapped_column(MAC, unique=True)
    guest_mac: Mapped[str] = mapped_column(MAC, unique=True)
    # [{"name": ..., "healthy": ..., "detail": ...}] as last reported.
    services: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    last_error: Mapped[str] = mapped_column(String)
    reachable: Mapped[bool]
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class PortRow(StatusColumns, Base):
    __tablename__ = "ports"
    __table_args__ = (
        UniqueConstraint("network_id", "ip", name="uq_ports_network_ip"),
        UniqueConstraint("network_id", "hostname", name="uq_ports_network_hostname"),
        Index("ix_ports_network_ipv6", "network_id", "ipv6", unique=True),
        Index("ix_ports_tenant_order", "tenant_id", "created_at", "id"),
    )

    network_id: Mapped[str] = mapped_column(ID, ForeignKey("networks.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(MAC, unique=True)
    ip: Mapped[str] = mapped_column(IP)
    hostname: Mapped[str] = mapped_column(String(63))
    device_id: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # What the router's metadata service tells the guest (migration 0009).
    # NULL for none (a portable default: SQLite would store a text '' in a blob).
    user_data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, server_default=text("'{}'"))
    # A key pair in use cannot be deleted (the store refuses; no ON DELETE
    # action, as migration 0009 adds it on SQLite).
    ssh_key_pair_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("ssh_key_pairs.id"), nullable=True, index=True)
    # Security (migration 0015): the groups named (IDs of security_groups,
    # [] for the tenant's default group), port security, allowed pairs
    # ([{"ip": ..., "mac": ...}]).
    security_group_ids: Mapped[list[str]] = mapped_column(
        JSON, server_default=text("'[]'"), default=list)
    port_security: Mapped[bool] = mapped_column(Boolean, server_default=true(), default=True)
    allowed_address_pairs: Mapped[list[dict[str, str]]] = mapped_column(
        JSON, server_default=text("'[]'"), default=list)
    # The compute host the NIC is plugged on (a hosts.name; "" for none).
    binding_host: Mapped[str] = mapped_column(String(63), server_default="", default="",
                                              index=True)
    # IPv6 (0017): the stateful DHCPv6 reservation or the EUI-64 address.
    ipv6: Mapped[str | None] = mapped_column(IP, nullable=True, default=None)
    # IMDSv2: "optional" or "required" (migration 0012).
    metadata_tokens: Mapped[str] = mapped_column(String(16), server_default=text("'optional'"))
    # [{"number": 42, "type": "ips", "values": [...]}, ...] (migration 0012).
    dhcp_options: Mapped[list[dict[str, object]]] = mapped_column(JSON,
                                                                  server_default=text("'[]'"))


class MacRow(Base):
    """Every allocated MAC (ports and routers), so uniqueness is global."""

    __tablename__ = "mac_addresses"

    mac: Mapped[str] = mapped_column(MAC, primary_key=True)
    # Exactly one owner; the row goes with it.
    port_id: Mapped[str | None] = mapped_column(ID, ForeignKey("ports.id", ondelete="CASCADE"))
    router_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("routers.id", ondelete="CASCADE")
    )


class PublicIpRow(StatusColumns, Base):
    """An address allocated from the zone's public pool."""

    __tablename__ = "public_ips"

    ip: Mapped[str] = mapped_column(IP, unique=True)
    # "source_nat" (one per network); later "tenant" (static NAT, forwards).
    kind: Mapped[str] = mapped_column(String(16))
    network_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), index=True
    )
    # Edge (0002) added the status columns to existing addresses (source-NAT
    # ones keep generation 0): the router generation of the last association
    # change, and the router's error for the address.
    generation: Mapped[int] = mapped_column(default=0, server_default="0")
    error: Mapped[str] = mapped_column(String, default="", server_default="")
    # A VPC's source-NAT address (0005; deleted with the VPC by the store);
    # network_id is then empty.
    vpc_id: Mapped[str | None] = mapped_column(ID, ForeignKey("vpcs.id"), index=True,
                                               default=None)


PUBLIC_IP_SOURCE_NAT = "source_nat"
