"""Redundant routers: a router's second instance, its sync VLAN and reports.

Revision ID: 0016
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_redundancy",
        sa.Column("router_id", sa.String(36), sa.ForeignKey("routers.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("peer_host", sa.String(253), nullable=False),
        sa.Column("sync_vlan", sa.Integer(), nullable=False, unique=True),
        sa.Column("virtual_router_id", sa.Integer(), nullable=False),
        sa.Column("preferred", sa.Integer(), nullable=False),
        sa.Column("instances", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("router_redundancy")
