"""Guest metadata: tenant SSH key pairs; user data, labels and a key pair on ports.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.String(36)


def upgrade() -> None:
    op.create_table(
        "ssh_key_pairs",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("key_type", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_ssh_key_pairs_tenant_name"),
    )
    op.create_index("ix_ssh_key_pairs_tenant_order", "ssh_key_pairs",
                    ["tenant_id", "created_at", "id"])
    op.add_column("ports", sa.Column("user_data", sa.LargeBinary(), nullable=True))
    op.add_column("ports", sa.Column("labels", sa.JSON(), nullable=False,
                                     server_default=sa.text("'{}'")))
    # On SQLite a plain ADD COLUMN with its REFERENCES clause: a batch rebuild
    # of ports would cascade its DROP into mac_addresses. No ON DELETE action
    # (SQLite's reflection cannot read one on an added column): the store
    # refuses to delete a key pair a port uses.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE ports ADD COLUMN ssh_key_pair_id VARCHAR(36)"
                   " REFERENCES ssh_key_pairs (id)")
    else:
        op.add_column("ports", sa.Column("ssh_key_pair_id", ID, nullable=True))
        op.create_foreign_key("fk_ports_ssh_key_pair_id", "ports", "ssh_key_pairs",
                              ["ssh_key_pair_id"], ["id"])
    op.create_index("ix_ports_ssh_key_pair_id", "ports", ["ssh_key_pair_id"])


def downgrade() -> None:
    op.drop_index("ix_ports_ssh_key_pair_id", table_name="ports")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_ports_ssh_key_pair_id", "ports", type_="foreignkey")
    # SQLite drops a column in place (3.35+) unless something references it.
    op.drop_column("ports", "ssh_key_pair_id")
    op.drop_column("ports", "labels")
    op.drop_column("ports", "user_data")
    op.drop_index("ix_ssh_key_pairs_tenant_order", table_name="ssh_key_pairs")
    op.drop_table("ssh_key_pairs")
