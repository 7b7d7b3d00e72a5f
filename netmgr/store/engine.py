"""The database engine and the schema migrations.

SQLite (a file; the embedded default) or any SQLAlchemy URL (PostgreSQL for
several replicas). On SQLite, writes run in ``BEGIN IMMEDIATE`` transactions,
so allocations are serialised and the store's retry on a unique constraint
is rarely needed; reads use deferred transactions, which in WAL mode see one
consistent snapshot without blocking writers.

The schema is created by Alembic (``netmgr/store/migrations``); ``upgrade()``
runs it programmatically when the store opens.
"""

from __future__ import annotations

import pathlib
import time
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

from common.private_files import create_private, ensure_private_dir, restrict

if TYPE_CHECKING:
    from netmgr.store.secrets import SecretBox

MIGRATIONS_DIR = pathlib.Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option on a connection: how a SQLite transaction begins.
BEGIN_MODE = "cloudnet_sqlite_begin"


def make_engine(url: str, *, pool_size: int = 16) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # PostgreSQL: READ COMMITTED plus row locks (zone, router rows) in the
        # store and the unique constraints keep allocations race-free.
        pg = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
        _ping_when_idle(pg)
        return pg
    if parsed.database and parsed.database != ":memory:":
        # Only netmgr reads its database: the file 0600 before SQLite opens it
        # (SQLite gives the -wal and -shm files the database file's mode).
        ensure_private_dir(pathlib.Path(parsed.database).parent)
        create_private(parsed.database)
        for suffix in ("-wal", "-shm", "-journal"):
            restrict(parsed.database + suffix)
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    _configure_sqlite(engine)
    return engine


# A pooled connection unused this long is pinged before a transaction gets
# it (one that came back from a transaction just now is not: under load that
# ping was a round trip per transaction, a tenth of the API's samples).
IDLE_PING_SECONDS = 1.0
_CHECKED_IN = "cloudnet_checked_in"


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling for idle connections only: a database
    restarted while a connection sat in the pool is found before a call uses
    it; one that dies while connections are busy fails those calls with
    UNAVAILABLE (``Database``), and SQLAlchemy then drops the whole pool."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is not None and time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            cur = dbapi_conn.cursor()
            cur.execute("SELECT 1")
            cur.close()
            dbapi_conn.rollback()
        except Exception as e:
            # The pool discards this connection and checks out another.
            raise exc.DisconnectionError(str(e)) from e


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own
        # implicit BEGIN is deferred and starts late).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows (a customer gateway's sealed key) are overwritten with
        # zeros, not left in free pages.
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: two allocations never read the
        # same "lowest free" value, and no transaction fails half-way with
        # SQLITE_BUSY on lock upgrade (busy_timeout applies to BEGIN IMMEDIATE).
        mode = conn.get_execution_options().get(BEGIN_MODE, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def writer(engine: Engine) -> Engine:
    """The engine to write through (same pool; SQLite begins IMMEDIATE)."""
    return engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"})


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head",
            secret_box: SecretBox | None = None) -> bool:
    """Bring the schema to ``revision`` (idempotent). ``secret_box``
    (``netmgr.store.secrets.SecretBox``) seals the secrets a migration moves
    out of clear (0010). True when a migration that rewrote secrets ran: the
    caller then purges the clear copies (``purge_freed``)."""
    cfg = alembic_config()
    with writer(engine).begin() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        cfg.attributes["secret_box"] = secret_box
        command.upgrade(cfg, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before != after and _crossed(before, after, SEALING_REVISION)


# The migration that seals the VPN keys (clear copies left behind before it).
SEALING_REVISION = "0010"


def _crossed(before: str | None, after: str | None, rev: str) -> bool:
    return before is not None and before < rev <= (after or "")


def purge_freed(engine: Engine) -> None:
    """Leave no copy of rewritten rows in the database's files: on SQLite,
    VACUUM rebuilds the file from live rows only and a TRUNCATE checkpoint
    empties the write-ahead log. (PostgreSQL keeps dead row versions until
    its own VACUUM: docs/operations.md.)"""
    if engine.dialect.name != "sqlite":
        return
    # The DBAPI connection itself: VACUUM cannot run in the transaction that
    # the engine's "begin" hook opens.
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("VACUUM")
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cur.close()
    finally:
        raw.close()
