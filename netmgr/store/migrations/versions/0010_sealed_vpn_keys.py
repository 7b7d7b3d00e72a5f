"""VPN pre-shared keys sealed at rest: ``customer_gateways.psk`` (clear)
becomes ``psk_sealed`` (AES-GCM under netmgr's secrets key, the row's ID as
associated data; ``netmgr.store.secrets``).

The key comes from the store that runs the migration
(``config.attributes["secret_box"]``); without one, a database holding keys
is not migrated (the alembic command line cannot seal them). The store then
rebuilds the SQLite file (VACUUM) and empties its write-ahead log, so no
clear key stays in a free page or in the log (PostgreSQL: see
docs/operations.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import context, op

if TYPE_CHECKING:
    from netmgr.store.secrets import SecretBox

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = sa.table("customer_gateways", sa.column("id", sa.String()),
                 sa.column("psk", sa.String()), sa.column("psk_sealed", sa.String()))


def _box() -> SecretBox:
    box: SecretBox | None = context.config.attributes.get("secret_box")
    if box is None:
        raise RuntimeError("migration 0010 seals the VPN keys: run it through netmgr "
                           "(cloudnet-netmgr starts it with its secrets key)")
    return box


def _drop(column: str) -> None:
    # SQLite drops a column in place (3.35+): no copy of the table, whose
    # DROP would cascade into the connections that reference it.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f'ALTER TABLE customer_gateways DROP COLUMN "{column}"')
    else:
        op.drop_column("customer_gateways", column)


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("customer_gateways", sa.Column("psk_sealed", sa.String(255), nullable=False,
                                                 server_default=""))
    rows = conn.execute(sa.select(TABLE.c.id, TABLE.c.psk)).all()
    if rows:
        box = _box()
        for row_id, psk in rows:
            conn.execute(TABLE.update().where(TABLE.c.id == row_id).values(
                psk_sealed=box.seal(psk, row_id), psk=""))
    _drop("psk")


def downgrade() -> None:
    conn = op.get_bind()
    op.add_column("customer_gateways", sa.Column("psk", sa.String(128), nullable=False,
                                                 server_default=""))
    rows = conn.execute(sa.select(TABLE.c.id, TABLE.c.psk_sealed)).all()
    if rows:
        box = _box()
        for row_id, sealed in rows:
            conn.execute(TABLE.update().where(TABLE.c.id == row_id).values(
                psk=box.open(sealed, row_id)))
    _drop("psk_sealed")
