"""Edge services: public IPs, static NAT, port forwarding, firewall rules.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Tenant public IPs are rows of ``public_ips`` (kind ``tenant``) that gain the
router generation and error of their association; the rules get a table each.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(36)


def _fk(column: str, target: str, ondelete: str = "CASCADE", nullable: bool = False,
        **kw: Any) -> sa.Column[Any]:
    return sa.Column(column, ID, sa.ForeignKey(target, ondelete=ondelete), nullable=nullable,
                     **kw)


def _state() -> list[sa.Column[Any]]:
    return [sa.Column("generation", sa.Integer(), nullable=False),
            sa.Column("error", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False)]


def upgrade() -> None:
    with op.batch_alter_table("public_ips") as b:
        b.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("error", sa.String(), nullable=False, server_default=""))

    op.create_table(
        "static_nats",
        sa.Column("id", ID, primary_key=True),
        _fk("tenant_id", "tenants.id", "RESTRICT"),
        _fk("network_id", "networks.id"),
        _fk("public_ip_id", "public_ips.id", unique=True),
        _fk("port_id", "ports.id", unique=True),
        *_state(),
    )
    op.create_index("ix_static_nats_tenant_order", "static_nats",
                    ["tenant_id", "created_at", "id"])
    op.create_index("ix_static_nats_network_id", "static_nats", ["network_id"])

    op.create_table(
        "port_forwards",
        sa.Column("id", ID, primary_key=True),
        _fk("tenant_id", "tenants.id", "RESTRICT"),
        _fk("network_id", "networks.id"),
        _fk("public_ip_id", "public_ips.id"),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("public_port", sa.Integer(), nullable=False),
        sa.Column("public_port_end", sa.Integer(), nullable=False),
        _fk("port_id", "ports.id"),
        sa.Column("private_port", sa.Integer(), nullable=False),
        sa.Column("private_port_end", sa.Integer(), nullable=False),
        sa.Column("source_cidrs", sa.JSON(), nullable=False),
        *_state(),
    )
    op.create_index("ix_port_forwards_tenant_order", "port_forwards",
                    ["tenant_id", "created_at", "id"])
    for col in ("network_id", "public_ip_id", "port_id"):
        op.create_index(f"ix_port_forwards_{col}", "port_forwards", [col])

    op.create_table(
        "firewall_rules",
        sa.Column("id", ID, primary_key=True),
        _fk("tenant_id", "tenants.id", "RESTRICT"),
        sa.Column("direction", sa.String(8), nullable=False),
        _fk("network_id", "networks.id"),
        _fk("public_ip_id", "public_ips.id", nullable=True),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("port_end", sa.Integer(), nullable=False),
        sa.Column("icmp_type", sa.Integer(), nullable=False),
        sa.Column("icmp_code", sa.Integer(), nullable=False),
        sa.Column("cidrs", sa.JSON(), nullable=False),
        *_state(),
    )
    op.create_index("ix_firewall_rules_tenant_order", "firewall_rules",
                    ["tenant_id", "created_at", "id"])
    for col in ("network_id", "public_ip_id"):
        op.create_index(f"ix_firewall_rules_{col}", "firewall_rules", [col])

    op.create_table(
        "load_balancers",
        sa.Column("id", ID, primary_key=True),
        _fk("tenant_id", "tenants.id", "RESTRICT"),
        _fk("network_id", "networks.id"),
        _fk("public_ip_id", "public_ips.id"),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("public_port", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("private_port", sa.Integer(), nullable=False),
        sa.Column("stickiness", sa.String(8), nullable=False),
        sa.Column("health_check", sa.JSON(), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("member_health", sa.JSON(), nullable=False),
        sa.Column("source_cidrs", sa.JSON(), nullable=False),
        *_state(),
    )
    op.create_index("ix_load_balancers_tenant_order", "load_balancers",
                    ["tenant_id", "created_at", "id"])
    for col in ("network_id", "public_ip_id"):
        op.create_index(f"ix_load_balancers_{col}", "load_balancers", [col])

    op.create_table(
        "egress_policies",
        _fk("network_id", "networks.id", primary_key=True),
        sa.Column("default_deny", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("egress_policies", "load_balancers", "firewall_rules", "port_forwards",
                  "static_nats"):
        op.drop_table(table)
    with op.batch_alter_table("public_ips") as b:
        b.drop_column("error")
        b.drop_column("generation")
