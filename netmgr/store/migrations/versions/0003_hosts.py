"""Compute hosts registered by compute agents.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

One row per host (unique name): the compute agent's address, fabric and
capacity (netmgr/store/hosts.py). VMs themselves live in libvirt on their host.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("fabric", sa.String(16), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hosts")
