"""Quotas (zone-wide defaults and per-tenant overrides), the audit event log,
and token expiry and read-only scope.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0014"
branch_labels = None
depends_on = None

ID = sa.String(36)


def upgrade() -> None:
    op.create_table(
        "quota_limits",
        # "*": the zone-wide default; else a tenant's ID (its override).
        sa.Column("scope", sa.String(36), primary_key=True),
        sa.Column("resource", sa.String(32), primary_key=True),
        sa.Column("max_count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        # No foreign keys: the log outlives the tenants and tokens it names.
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("token_id", sa.String(36), nullable=False),
        sa.Column("method", sa.String(128), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(512), nullable=False),
    )
    op.create_index("ix_events_at", "events", ["at"])
    op.create_index("ix_events_tenant_seq", "events", ["tenant_id", "seq"])
    op.create_index("ix_events_object_seq", "events", ["object_id", "seq"])
    op.add_column("tokens", sa.Column("expires_at", sa.DateTime(), nullable=True))
    op.add_column("tokens", sa.Column("read_only", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("read_only")
        batch.drop_column("expires_at")
    op.drop_index("ix_events_object_seq", table_name="events")
    op.drop_index("ix_events_tenant_seq", table_name="events")
    op.drop_index("ix_events_at", table_name="events")
    op.drop_table("events")
    op.drop_table("quota_limits")
