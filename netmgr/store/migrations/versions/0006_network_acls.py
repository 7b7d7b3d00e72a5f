"""Network ACL lists and numbered rules.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

``network_acls`` (a VPC's lists) and ``acl_rules``; a tier's list is
``networks.acl_id`` (a plain column: the built-in lists are fixed IDs, not
rows; NULL means default_allow).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.String(36)


def upgrade() -> None:
    op.create_table(
        "network_acls",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("vpc_id", ID, sa.ForeignKey("vpcs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_network_acls_vpc_order", "network_acls", ["vpc_id", "created_at", "id"])
    op.create_table(
        "acl_rules",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("acl_id", ID, sa.ForeignKey("network_acls.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("port_end", sa.Integer(), nullable=False),
        sa.Column("icmp_type", sa.Integer(), nullable=False),
        sa.Column("icmp_code", sa.Integer(), nullable=False),
        sa.Column("cidrs", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("acl_id", "number", name="uq_acl_rules_acl_number"),
    )
    # Plain ADD COLUMN (no table rebuild on SQLite, nothing cascades).
    op.add_column("networks", sa.Column("acl_id", ID, nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): a rebuild would cascade into ports.
    op.drop_column("networks", "acl_id")
    op.drop_table("acl_rules")
    op.drop_table("network_acls")
