"""Alembic environment of the network manager.

The store runs migrations programmatically and hands over its connection in
``config.attributes["connection"]``; the ``alembic`` command line works too
(with ``-x url=...`` or ``sqlalchemy.url`` set).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from netmgr.store.engine import make_engine
from netmgr.store.tables.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later migrations copy tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set sqlalchemy.url")
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
run_online()
