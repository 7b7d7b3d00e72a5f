"""Migration 0010 on a database that holds VPN keys in clear, one of them of
a deleted customer gateway (still in a free page): after the store opened
it, the live key is sealed and opens again, and no file of the database
holds either key in clear."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from netmgr.store import engine as db
from netmgr.store.facade import Store
from netmgr.store.secrets import SecretBox

LIVE = "live-Clear.key-0123456789abcdef"
DELETED = "deleted-Clear.key-fedcba987654"


def _cgw(c: sqlite3.Connection, row_id: str, psk: str) -> None:
    c.execute(
        "INSERT INTO customer_gateways (id, tenant_id, name, peer_address, peer_cidrs, psk,"
        " ike_version, ike_proposals, esp_proposals, ike_lifetime, esp_lifetime, dpd_delay,"
        " dpd_timeout, force_encap, created_at) VALUES (?, 't1', ?, '192.0.2.2',"
        " '[\"172.16.0.0/24\"]', ?, 2, '[]', '[]', 28800, 3600, 10, 30, 0, '2026-01-01')",
        (row_id, f"n{row_id}", psk))


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_upgrade_to_0010_seals_the_keys_and_leaves_no_clear_copy(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine, "0009")
    engine.dispose()
    # Written as an older netmgr did: no secure_delete, the key left behind
    # in the deleted row's free space.
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA secure_delete=OFF")
    c.execute("INSERT INTO tenants VALUES ('t1', 'acme', '2026-01-01')")
    _cgw(c, "c1", LIVE)
    _cgw(c, "c2", DELETED)
    c.execute("DELETE FROM customer_gateways WHERE id = 'c2'")
    # A connection using c1 (its gateway left out: foreign keys are off here):
    # the migration must not take it away with the column.
    c.execute("INSERT INTO vpn_connections (id, tenant_id, vpn_gateway_id, customer_gateway_id,"
              " passive, reset_serial, sa_status, generation, error, created_at) VALUES"
              " ('v1', 't1', 'g1', 'c1', 0, 0, '{}', 1, '', '2026-01-01')")
    c.close()
    before = b"".join(_files(tmp_path).values())
    assert LIVE.encode() in before
    assert DELETED.encode() in before

    box = SecretBox.from_key_file(tmp_path / "secrets.key")
    store = Store(f"sqlite:///{path}", secrets=box)
    try:
        rows = store.db.read(lambda s: s.execute(text(
            "SELECT id, psk_sealed FROM customer_gateways")).all())
        assert [r[0] for r in rows] == ["c1"]
        assert box.open(rows[0][1], "c1") == LIVE
        assert store.db.read(lambda s: s.execute(text(
            "SELECT customer_gateway_id FROM vpn_connections")).all()) == [("c1",)]
        for name, data in _files(tmp_path).items():
            for key in (LIVE, DELETED):
                assert key.encode() not in data, f"{key} in clear in {name}"
    finally:
        store.close()


def test_without_a_key_a_database_with_keys_is_not_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine, "0009")
    with db.writer(engine).begin() as conn:
        conn.execute(text("INSERT INTO tenants VALUES ('t1', 'acme', '2026-01-01')"))
    c = sqlite3.connect(path, isolation_level=None)
    _cgw(c, "c1", LIVE)
    c.close()
    with pytest.raises(RuntimeError, match="secrets key"):
        db.upgrade(engine)
    engine.dispose()
