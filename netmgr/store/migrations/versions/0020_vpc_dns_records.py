"""DNS records of a VPC: served by its router to every tier.

Revision ID: 0020
Revises: 0016
Create Date: 2026-12-03

A record belongs to a network (``network_id``) or, new, to a VPC
(``vpc_id``); ``network_id`` becomes nullable. Nothing references
``dns_records``, so SQLite's rebuild of the table moves no other.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0016"
branch_labels = None
depends_on = None

ID = sa.String(36)


def upgrade() -> None:
    with op.batch_alter_table("dns_records") as b:
        b.alter_column("network_id", existing_type=ID, nullable=True)
        b.add_column(sa.Column("vpc_id", ID, nullable=True))
        b.create_foreign_key("fk_dns_records_vpc_id", "vpcs", ["vpc_id"], ["id"],
                             ondelete="CASCADE")
    op.create_index("ix_dns_records_vpc_id", "dns_records", ["vpc_id"])


def downgrade() -> None:
    op.execute("DELETE FROM dns_records WHERE vpc_id IS NOT NULL")
    op.drop_index("ix_dns_records_vpc_id", "dns_records")
    with op.batch_alter_table("dns_records") as b:
        b.drop_constraint("fk_dns_records_vpc_id", type_="foreignkey")
        b.drop_column("vpc_id")
        b.alter_column("network_id", existing_type=ID, nullable=False)
