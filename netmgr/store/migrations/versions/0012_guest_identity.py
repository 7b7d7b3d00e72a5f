"""Guest identity: IMDSv2 tokens and DHCP options per port; DNS records of networks.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0017"
branch_labels = None
depends_on = None


ID = sa.String(36)


def upgrade() -> None:
    op.create_table(
        "dns_records",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("network_id", ID, sa.ForeignKey("networks.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.UniqueConstraint("network_id", "name", "type", "value",
                            name="uq_dns_records_record"),
    )
    op.create_index("ix_dns_records_network_id", "dns_records", ["network_id"])
    op.create_index("ix_dns_records_tenant_order", "dns_records",
                    ["tenant_id", "created_at", "id"])
    op.add_column("ports", sa.Column("metadata_tokens", sa.String(16), nullable=False,
                                     server_default=sa.text("'optional'")))
    op.add_column("ports", sa.Column("dhcp_options", sa.JSON(), nullable=False,
                                     server_default=sa.text("'[]'")))


def downgrade() -> None:
    op.drop_column("ports", "dhcp_options")
    op.drop_index("ix_dns_records_tenant_order", table_name="dns_records")
    op.drop_index("ix_dns_records_network_id", table_name="dns_records")
    op.drop_table("dns_records")
    op.drop_column("ports", "metadata_tokens")
