"""VPCs and their tiers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

A ``vpcs`` table; tiers are networks with ``vpc_id`` (and the MAC of the VPC
router's interface on the tier); the VPC's router and source-NAT address are
``routers`` and ``public_ips`` rows with ``vpc_id`` (a VPC router has no
``network_id``, so that column becomes nullable).
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.String(36)


def _dependents(table: str) -> list[str]:
    """Tables referencing ``table``, directly or through others, parents first
    (SQLite only; elsewhere nothing is rebuilt)."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return []
    names = [r[0] for r in bind.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table'")]
    refs = {n: {fk[2] for fk in bind.exec_driver_sql(f'PRAGMA foreign_key_list("{n}")')}
            for n in names}
    out: list[str] = []
    todo = [table]
    while todo:
        parent = todo.pop(0)
        for n in names:
            if n != table and n not in out and parent in refs[n]:
                out.append(n)
                todo.append(n)
    return out


def _saved(table: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """The rows of every table that depends on ``table``.

    SQLite cannot change a column's constraints in place: batch mode copies
    the table and drops the old one, and with foreign keys on (they are, and
    the pragma cannot change inside the migration's transaction) that DROP
    cascades into the dependent rows. They are read here and put back after.
    """
    bind = op.get_bind()
    return [(t, [dict(r._mapping) for r in bind.exec_driver_sql(f'SELECT * FROM "{t}"')])
            for t in _dependents(table)]


def _restore(saved: list[tuple[str, list[dict[str, Any]]]]) -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    tables = [(sa.Table(name, meta, autoload_with=bind), rows) for name, rows in saved]
    for t, _ in reversed(tables):
        bind.execute(t.delete())
    for t, rows in tables:
        if rows:
            bind.execute(t.insert(), rows)


def _add_vpc_column(table: str) -> None:
    """A nullable ``vpc_id`` referencing vpcs. On SQLite a plain ADD COLUMN
    with its REFERENCES clause: no table rebuild, so nothing cascades. No ON
    DELETE action (SQLite's reflection cannot read one on an added column):
    the store deletes a VPC's address itself and refuses while tiers exist."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE {table} ADD COLUMN vpc_id VARCHAR(36) REFERENCES vpcs (id)")
        return
    op.add_column(table, sa.Column("vpc_id", ID, nullable=True))
    op.create_foreign_key(f"fk_{table}_vpc_id", table, "vpcs", ["vpc_id"], ["id"])


def _recreate() -> Literal["auto", "always"]:
    """SQLite rebuilds the table (it cannot alter a column in place); elsewhere
    the columns are altered in place (a rebuild would drop the primary key
    that other tables' foreign keys depend on)."""
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade() -> None:
    op.create_table(
        "vpcs",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                  nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("cidr", sa.String(18), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_vpcs_tenant_order", "vpcs", ["tenant_id", "created_at", "id"])
    _add_vpc_column("networks")
    op.add_column("networks", sa.Column("router_mac", sa.String(17), nullable=True))
    op.create_index("ix_networks_vpc_id", "networks", ["vpc_id"])
    op.create_index("ix_networks_router_mac", "networks", ["router_mac"], unique=True)
    _add_vpc_column("public_ips")
    op.create_index("ix_public_ips_vpc_id", "public_ips", ["vpc_id"])
    saved = _saved("routers")
    with op.batch_alter_table("routers", recreate=_recreate()) as b:
        b.alter_column("network_id", existing_type=ID, nullable=True)
        b.add_column(sa.Column("vpc_id", ID, nullable=True))
        b.create_foreign_key("fk_routers_vpc_id", "vpcs", ["vpc_id"], ["id"],
                             ondelete="CASCADE")
        b.create_unique_constraint("uq_routers_vpc_id", ["vpc_id"])
    _restore(saved)


def downgrade() -> None:
    op.execute("DELETE FROM routers WHERE vpc_id IS NOT NULL")
    op.execute("DELETE FROM public_ips WHERE vpc_id IS NOT NULL")
    op.execute("DELETE FROM networks WHERE vpc_id IS NOT NULL")
    saved = _saved("routers")
    with op.batch_alter_table("routers", recreate=_recreate()) as b:
        b.drop_constraint("uq_routers_vpc_id", type_="unique")
        b.drop_constraint("fk_routers_vpc_id", type_="foreignkey")
        b.drop_column("vpc_id")
        b.alter_column("network_id", existing_type=ID, nullable=False)
    _restore(saved)
    op.drop_index("ix_public_ips_vpc_id", "public_ips")
    saved = _saved("public_ips")
    with op.batch_alter_table("public_ips", recreate=_recreate()) as b:
        b.drop_column("vpc_id")
    _restore(saved)
    op.drop_index("ix_networks_router_mac", "networks")
    op.drop_index("ix_networks_vpc_id", "networks")
    saved = _saved("networks")
    with op.batch_alter_table("networks", recreate=_recreate()) as b:
        b.drop_column("router_mac")
        b.drop_column("vpc_id")
    _restore(saved)
    op.drop_table("vpcs")
