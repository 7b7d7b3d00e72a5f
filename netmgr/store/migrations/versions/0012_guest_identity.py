"""Guest identity: IMDSv2 tokens and DHCP options per port.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ports", sa.Column("metadata_tokens", sa.String(16), nullable=False,
                                     server_default=sa.text("'optional'")))
    op.add_column("ports", sa.Column("dhcp_options", sa.JSON(), nullable=False,
                                     server_default=sa.text("'[]'")))


def downgrade() -> None:
    op.drop_column("ports", "dhcp_options")
    op.drop_column("ports", "metadata_tokens")
