"""Replicas: the lease epoch per shard of routers; create calls by request ID;
hosts' role, state and heartbeat, and their events.

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
    op.add_column("hosts", sa.Column("role", sa.String(16), nullable=False,
                                     server_default="compute"))
    op.add_column("hosts", sa.Column("state", sa.String(16), nullable=False,
                                     server_default="unknown"))
    op.add_column("hosts", sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
    op.create_table(
        "host_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_host_events_host", "host_events", ["host"])


def downgrade() -> None:
    op.drop_index("ix_host_events_host", "host_events")
    op.drop_table("host_events")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("state")
        batch.drop_column("role")
    op.drop_index("ix_create_requests_created_at", "create_requests")
    op.drop_table("create_requests")
    op.drop_table("shard_leases")
