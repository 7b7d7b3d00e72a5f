"""The schema (Alembic migrations) and the SQLite engine set-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from netmgr.store import engine as db
from netmgr.store.tables.schema import metadata


def test_migrations_apply_on_an_empty_database_and_match_the_models(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/empty.db")
    try:
        db.upgrade(engine)
        db.upgrade(engine)  # idempotent
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
            assert ctx.get_current_revision() == head
            assert compare_metadata(ctx, metadata) == []
        tables = set(inspect(engine).get_table_names())
        assert {"tenants", "tokens", "zone", "networks", "routers", "ports", "mac_addresses",
                "public_ips", "alembic_version"} <= tables
        assert {"static_nats", "port_forwards", "firewall_rules", "egress_policies",
                "load_balancers"} <= tables
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/updown.db"
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        cfg = db.alembic_config()
        with db.writer(engine).begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        db.upgrade(engine)
        assert "ports" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_alembic_command_line_entry_works_with_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    command.upgrade(db.alembic_config(url), "head")
    engine = db.make_engine(url)
    try:
        assert "networks" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/sub/dir/pragmas.db")  # dirs are created
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == db.SQLITE_BUSY_TIMEOUT_MS
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_writers_hold_the_write_lock_from_the_start(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a second writer cannot even start while one is open."""
    import sqlite3

    path = tmp_path / "lock.db"
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        db.upgrade(engine)
        with db.writer(engine).begin():
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
        with engine.begin():  # readers are deferred: they do not take it
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            other.close()
    finally:
        engine.dispose()
