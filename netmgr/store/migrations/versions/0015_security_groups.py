"""Security groups and their rules; a port's groups, port security,
allowed address pairs and host binding; shared networks; every existing
tenant gets its default group.

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = sa.String(36)


def upgrade() -> None:
    op.create_table(
        "security_groups",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_security_groups_tenant_name"),
    )
    op.create_index("ix_security_groups_tenant_order", "security_groups",
                    ["tenant_id", "created_at", "id"])
    op.create_table(
        "security_group_rules",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("security_group_id", ID,
                  sa.ForeignKey("security_groups.id", ondelete="CASCADE"), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("ethertype", sa.String(4), nullable=False),
        sa.Column("protocol", sa.String(4), nullable=False),
        sa.Column("port_min", sa.Integer(), nullable=False),
        sa.Column("port_max", sa.Integer(), nullable=False),
        sa.Column("icmp_type", sa.Integer(), nullable=False),
        sa.Column("icmp_code", sa.Integer(), nullable=False),
        sa.Column("remote_cidr", sa.String(43), nullable=False),
        sa.Column("remote_group_id", ID,
                  sa.ForeignKey("security_groups.id", ondelete="CASCADE"), nullable=True),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_security_group_rules_group_order", "security_group_rules",
                    ["security_group_id", "created_at", "id"])
    op.create_index("ix_security_group_rules_remote_group_id", "security_group_rules",
                    ["remote_group_id"])
    op.add_column("ports", sa.Column("security_group_ids", sa.JSON(), nullable=False,
                                     server_default=sa.text("'[]'")))
    op.add_column("ports", sa.Column("port_security", sa.Boolean(), nullable=False,
                                     server_default=sa.true()))
    op.add_column("ports", sa.Column("allowed_address_pairs", sa.JSON(), nullable=False,
                                     server_default=sa.text("'[]'")))
    op.add_column("ports", sa.Column("binding_host", sa.String(63), nullable=False,
                                     server_default=""))
    op.create_index("ix_ports_binding_host", "ports", ["binding_host"])
    op.add_column("networks", sa.Column("shared", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.add_column("networks", sa.Column("shared_tenant_ids", sa.JSON(), nullable=False,
                                        server_default=sa.text("'[]'")))
    # Every tenant has its default group (all egress, ingress from its own
    # members), which filters its existing ports: they name no group.
    bind = op.get_bind()
    groups = sa.table("security_groups", *(sa.column(c) for c in (
        "id", "tenant_id", "name", "description", "created_at")))
    rules = sa.table("security_group_rules", *(sa.column(c) for c in (
        "id", "tenant_id", "security_group_id", "direction", "ethertype", "protocol",
        "port_min", "port_max", "icmp_type", "icmp_code", "remote_cidr", "remote_group_id",
        "description", "created_at")))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for (tenant_id,) in bind.execute(sa.text("SELECT id FROM tenants")).fetchall():
        gid = str(uuid.uuid4())
        bind.execute(groups.insert().values(id=gid, tenant_id=tenant_id, name="default",
                                            description="default group", created_at=now))
        for direction, ethertype, remote in (("egress", "ipv4", None), ("egress", "ipv6", None),
                                             ("ingress", "ipv4", gid), ("ingress", "ipv6", gid)):
            bind.execute(rules.insert().values(
                id=str(uuid.uuid4()), tenant_id=tenant_id, security_group_id=gid,
                direction=direction, ethertype=ethertype, protocol="all", port_min=0,
                port_max=0, icmp_type=-1, icmp_code=-1, remote_cidr="", remote_group_id=remote,
                description="", created_at=now))


def downgrade() -> None:
    op.drop_column("networks", "shared_tenant_ids")
    op.drop_column("networks", "shared")
    op.drop_index("ix_ports_binding_host", table_name="ports")
    op.drop_column("ports", "binding_host")
    op.drop_column("ports", "allowed_address_pairs")
    op.drop_column("ports", "port_security")
    op.drop_column("ports", "security_group_ids")
    op.drop_index("ix_security_group_rules_remote_group_id", table_name="security_group_rules")
    op.drop_index("ix_security_group_rules_group_order", table_name="security_group_rules")
    op.drop_table("security_group_rules")
    op.drop_index("ix_security_groups_tenant_order", table_name="security_groups")
    op.drop_table("security_groups")
