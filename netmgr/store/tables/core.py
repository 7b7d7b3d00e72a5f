"""Tables of the network manager (SQLAlchemy 2 ORM) and the engine set-up.

SQLite (a file; the embedded default) or any SQLAlchemy URL (PostgreSQL for
several replicas). Unique constraints are the real guard of every allocation
(VLAN ID, public IP, port IP per network, MAC globally, host name per
network): the store retries a transaction that hits one. On SQLite, writes
also run in ``BEGIN IMMEDIATE`` transactions, so allocations are serialised
and the retry is rarely needed; reads use deferred transactions, which in WAL
mode see one consistent snapshot without blocking writers.

The schema is created by Alembic (``netmgr/migrations``); ``upgrade()`` runs
it programmatically when the store opens.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MIGRATIONS_DIR = pathlib.Path(__file__).parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option on a connection: how a SQLite transaction begins.
BEGIN_MODE = "cloudnet_sqlite_begin"

ID = String(36)
IP = String(15)
MAC = String(17)


def utcnow() -> dt.datetime:
    # Naive UTC: SQLite keeps no time zone, so store and compare naive values
    # everywhere and attach UTC when building model objects.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


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


class ZoneRow(Base):
    """The one zone (id 1), filled from the server config on first start."""

    __tablename__ = "zone"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    public_cidr: Mapped[str] = mapped_column(String(18))
    public_gateway: Mapped[str] = mapped_column(IP)
    public_pool_start: Mapped[str] = mapped_column(IP)
    public_pool_end: Mapped[str] = mapped_column(IP)
    vlan_min: Mapped[int]
    vlan_max: Mapped[int]
    upstream_dns: Mapped[list[str]] = mapped_column(JSON)
    domain_suffix: Mapped[str] = mapped_column(String(253))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class NetworkRow(Base):
    __tablename__ = "networks"
    __table_args__ = (Index("ix_networks_tenant_order", "tenant_id", "created_at", "id"),
                      Index("ix_networks_router_mac", "router_mac", unique=True))

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(63))
    cidr: Mapped[str] = mapped_column(String(18))
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


class PortRow(Base):
    __tablename__ = "ports"
    __table_args__ = (
        UniqueConstraint("network_id", "ip", name="uq_ports_network_ip"),
        UniqueConstraint("network_id", "hostname", name="uq_ports_network_hostname"),
        Index("ix_ports_tenant_order", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    network_id: Mapped[str] = mapped_column(ID, ForeignKey("networks.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(MAC, unique=True)
    ip: Mapped[str] = mapped_column(IP)
    hostname: Mapped[str] = mapped_column(String(63))
    device_id: Mapped[str] = mapped_column(String(64))
    # The router generation that last changed this port.
    generation: Mapped[int]
    error: Mapped[str] = mapped_column(String)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class MacRow(Base):
    """Every allocated MAC (ports and routers), so uniqueness is global."""

    __tablename__ = "mac_addresses"

    mac: Mapped[str] = mapped_column(MAC, primary_key=True)
    # Exactly one owner; the row goes with it.
    port_id: Mapped[str | None] = mapped_column(ID, ForeignKey("ports.id", ondelete="CASCADE"))
    router_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("routers.id", ondelete="CASCADE")
    )


class PublicIpRow(Base):
    """An address allocated from the zone's public pool."""

    __tablename__ = "public_ips"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    ip: Mapped[str] = mapped_column(IP, unique=True)
    # "source_nat" (one per network); later "tenant" (static NAT, forwards).
    kind: Mapped[str] = mapped_column(String(16))
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    network_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # Edge (0002): the router generation of the last association change, and
    # the router's error for the address.
    generation: Mapped[int] = mapped_column(default=0, server_default="0")
    error: Mapped[str] = mapped_column(String, default="", server_default="")
    # A VPC's source-NAT address (0005; deleted with the VPC by the store);
    # network_id is then empty.
    vpc_id: Mapped[str | None] = mapped_column(ID, ForeignKey("vpcs.id"), index=True,
                                               default=None)


PUBLIC_IP_SOURCE_NAT = "source_nat"


# ------------------------------------------------------------------ engine


def make_engine(url: str, *, pool_size: int = 16) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # PostgreSQL: READ COMMITTED plus row locks (zone, router rows) in the
        # store and the unique constraints keep allocations race-free.
        return create_engine(url, pool_size=pool_size, max_overflow=pool_size,
                             pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        pathlib.Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own
        # implicit BEGIN is deferred and starts late).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: two allocations never read the
        # same "lowest free" value, and no transaction fails half-way with
        # SQLITE_BUSY on lock upgrade (busy_timeout applies to BEGIN IMMEDIATE).
        mode = conn.get_execution_options().get(BEGIN_MODE, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def writer(engine: Engine) -> Engine:
    """The engine to write through (same pool; SQLite begins IMMEDIATE)."""
    return engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"})


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent)."""
    cfg = alembic_config()
    with writer(engine).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


# The edge tables (migration 0002) and the compute hosts (0003) belong to the
# same metadata, and so do the router VMs (0004), the VPCs (0005, 0006) and
# the VPN tables (0007).
from netmgr.store.tables import vpn as db_vpn  # noqa: E402, F401
