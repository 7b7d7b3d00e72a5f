"""Site-to-site VPN: VPN gateways (on a VPC's or an isolated network's
router), customer gateways, connections.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(36)


def _fk(column: str, target: str, ondelete: str = "CASCADE", **kw: Any) -> sa.Column[Any]:
    return sa.Column(column, ID, sa.ForeignKey(target, ondelete=ondelete), nullable=False, **kw)


def _int(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "vpn_gateways",
        sa.Column("id", ID, primary_key=True),
        _fk("tenant_id", "tenants.id", "RESTRICT"),
        sa.Column("vpc_id", ID, sa.ForeignKey("vpcs.id", ondelete="CASCADE"), nullable=True,
                  unique=True),
        sa.Column("network_id", ID, sa.ForeignKey("networks.id", ondelete="CASCADE"),
                  nullable=True, unique=True),
        _int("generation"),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_vpn_gateways_tenant_order", "vpn_gateways",
                    ["tenant_id", "created_at", "id"])
    op.create_table(
        "customer_gateways",
        sa.Column("id", ID, primary_key=True),
        _fk("tenant_id", "tenants.id"),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("peer_address", sa.String(15), nullable=False),
        sa.Column("peer_cidrs", sa.JSON(), nullable=False),
        sa.Column("psk", sa.String(128), nullable=False),
        _int("ike_version"),
        sa.Column("ike_proposals", sa.JSON(), nullable=False),
        sa.Column("esp_proposals", sa.JSON(), nullable=False),
        _int("ike_lifetime"), _int("esp_lifetime"), _int("dpd_delay"), _int("dpd_timeout"),
        sa.Column("force_encap", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_customer_gateways_tenant_order", "customer_gateways",
                    ["tenant_id", "created_at", "id"])
    op.create_table(
        "vpn_connections",
        sa.Column("id", ID, primary_key=True),
        _fk("tenant_id", "tenants.id", "RESTRICT"),
        _fk("vpn_gateway_id", "vpn_gateways.id"),
        _fk("customer_gateway_id", "customer_gateways.id", "RESTRICT"),
        sa.Column("passive", sa.Boolean(), nullable=False),
        _int("reset_serial"), _int("generation"),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("sa_status", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_vpn_connections_tenant_order", "vpn_connections",
                    ["tenant_id", "created_at", "id"])
    for col in ("vpn_gateway_id", "customer_gateway_id"):
        op.create_index(f"ix_vpn_connections_{col}", "vpn_connections", [col])


def downgrade() -> None:
    op.drop_table("vpn_connections")
    op.drop_table("customer_gateways")
    op.drop_table("vpn_gateways")
