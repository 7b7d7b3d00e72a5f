"""Events carry the ID of the transaction that wrote them (PostgreSQL), so a
follower delivers an event only once every transaction that could still
commit before it has ended (netmgr.store.events.EventStore.watch).

Revision ID: 0018
Revises: 0020
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("events", sa.Column(
        "xid", sa.BigInteger(), nullable=True,
        # The writing transaction's ID, taken by the insert itself (rows of
        # SQLite, one writer committing in number order, leave it NULL).
        server_default=sa.text("(pg_current_xact_id()::text::bigint)") if postgres else None))
    op.create_index("ix_events_xid_seq", "events", ["xid", "seq"])


def downgrade() -> None:
    op.drop_index("ix_events_xid_seq", table_name="events")
    op.drop_column("events", "xid")
