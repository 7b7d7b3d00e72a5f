"""Initial schema: tenants, tokens, zone, networks, routers, ports, MACs, public IPs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(36)
IP = sa.String(15)
MAC = sa.String(17)


def _timestamps(*names: str) -> list[sa.Column[Any]]:
    return [sa.Column(n, sa.DateTime(), nullable=False) for n in names]


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        *_timestamps("created_at"),
    )
    op.create_index("ix_tenants_created_at", "tenants", ["created_at"])

    op.create_table(
        "zone",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("public_cidr", sa.String(18), nullable=False),
        sa.Column("public_gateway", IP, nullable=False),
        sa.Column("public_pool_start", IP, nullable=False),
        sa.Column("public_pool_end", IP, nullable=False),
        sa.Column("vlan_min", sa.Integer(), nullable=False),
        sa.Column("vlan_max", sa.Integer(), nullable=False),
        sa.Column("upstream_dns", sa.JSON(), nullable=False),
        sa.Column("domain_suffix", sa.String(253), nullable=False),
        *_timestamps("updated_at"),
    )

    op.create_table(
        "networks",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("cidr", sa.String(18), nullable=False),
        sa.Column("gateway", IP, nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("dns_servers", sa.JSON(), nullable=False),
        sa.Column("domain_search", sa.JSON(), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("vlan_id", sa.Integer(), nullable=False, unique=True),
        *_timestamps("created_at", "updated_at"),
    )
    op.create_index("ix_networks_tenant_order", "networks", ["tenant_id", "created_at", "id"])

    op.create_table(
        "tokens",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        *_timestamps("created_at"),
    )
    op.create_index("ix_tokens_tenant_order", "tokens", ["tenant_id", "created_at", "id"])

    op.create_table(
        "ports",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("network_id", ID, sa.ForeignKey("networks.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("mac", MAC, nullable=False, unique=True),
        sa.Column("ip", IP, nullable=False),
        sa.Column("hostname", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=False),
        *_timestamps("created_at", "updated_at"),
        sa.UniqueConstraint("network_id", "ip", name="uq_ports_network_ip"),
        sa.UniqueConstraint("network_id", "hostname", name="uq_ports_network_hostname"),
    )
    op.create_index("ix_ports_tenant_order", "ports", ["tenant_id", "created_at", "id"])

    op.create_table(
        "public_ips",
        sa.Column("id", ID, primary_key=True),
        sa.Column("ip", IP, nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("network_id", ID, sa.ForeignKey("networks.id", ondelete="CASCADE"),
                  nullable=True),
        *_timestamps("created_at"),
    )
    op.create_index("ix_public_ips_network_id", "public_ips", ["network_id"])

    op.create_table(
        "routers",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("network_id", ID, sa.ForeignKey("networks.id", ondelete="CASCADE"),
                  nullable=False, unique=True),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("desired_generation", sa.Integer(), nullable=False),
        sa.Column("applied_generation", sa.Integer(), nullable=False),
        sa.Column("public_mac", MAC, nullable=False, unique=True),
        sa.Column("guest_mac", MAC, nullable=False, unique=True),
        sa.Column("services", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=False),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        *_timestamps("created_at", "updated_at"),
    )
    op.create_index("ix_routers_tenant_order", "routers", ["tenant_id", "created_at", "id"])

    op.create_table(
        "mac_addresses",
        sa.Column("mac", MAC, primary_key=True),
        sa.Column("port_id", ID, sa.ForeignKey("ports.id", ondelete="CASCADE"), nullable=True),
        sa.Column("router_id", ID, sa.ForeignKey("routers.id", ondelete="CASCADE"),
                  nullable=True),
    )


def downgrade() -> None:
    for table in ("mac_addresses", "routers", "public_ips", "ports", "tokens", "networks",
                  "zone", "tenants"):
        op.drop_table(table)
