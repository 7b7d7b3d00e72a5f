"""Replicas: the lease epoch per shard of routers; create calls by request ID.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shard_leases",
        sa.Column("shard", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "create_requests",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("method", sa.String(128), nullable=False),
        sa.Column("object_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_create_requests_created_at", "create_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_create_requests_created_at", "create_requests")
    op.drop_table("create_requests")
    op.drop_table("shard_leases")
