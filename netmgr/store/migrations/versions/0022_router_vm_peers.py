"""A redundant VM router's second VM.

Revision ID: 0022
Revises: 0018
Create Date: 2026-12-03

One row per redundant router of the VM backend (netmgr/store/tables/router_vms.py,
``RouterVmPeerRow``): instance 1's compute host, control address and MAC,
credential generation and token hash, state and boot time (instance 0's
stay in ``router_vms``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_vm_peers",
        sa.Column("router_id", sa.String(36), sa.ForeignKey("routers.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("host", sa.String(63), nullable=False),
        sa.Column("control_ip", sa.String(45), nullable=False, unique=True),
        sa.Column("control_mac", sa.String(17), nullable=False, unique=True),
        sa.Column("cred_generation", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(1024), nullable=False),
        sa.Column("replacements", sa.Integer(), nullable=False),
        sa.Column("defined_at", sa.DateTime(), nullable=True),
        sa.Column("healthy_at", sa.DateTime(), nullable=True),
        sa.Column("boot_seconds", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("router_vm_peers")
