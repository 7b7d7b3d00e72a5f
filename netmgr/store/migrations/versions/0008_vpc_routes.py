"""VPC static routes and private gateways.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.String(36)


def _owner() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("vpc_id", ID, sa.ForeignKey("vpcs.id", ondelete="CASCADE"), nullable=False),
    ]


def _state() -> list[sa.Column[Any]]:
    return [sa.Column("generation", sa.Integer(), nullable=False),
            sa.Column("error", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "vpc_private_gateways", *_owner(),
        sa.Column("vlan_id", sa.Integer(), nullable=False, unique=True),
        sa.Column("address", sa.String(18), nullable=False),
        sa.Column("gateway", sa.String(15), nullable=False),
        sa.Column("acl_id", ID, nullable=False),
        sa.Column("router_mac", sa.String(17), nullable=False, unique=True),
        *_state(),
    )
    op.create_index("ix_vpc_private_gateways_vpc_id", "vpc_private_gateways", ["vpc_id"])
    op.create_table(
        "vpc_static_routes", *_owner(),
        sa.Column("cidr", sa.String(18), nullable=False),
        sa.Column("next_hop", sa.String(15), nullable=False),
        *_state(),
        sa.UniqueConstraint("vpc_id", "cidr", name="uq_vpc_static_routes_cidr"),
    )


def downgrade() -> None:
    op.drop_table("vpc_static_routes")
    op.drop_table("vpc_private_gateways")
