"""Migration 0005 on a database with data: SQLite rebuilds ``routers`` (its
network_id becomes nullable); the rows referencing routers must survive."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from netmgr.store import engine as db


def test_upgrade_to_0005_keeps_routers_and_their_macs(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/old.db")
    try:
        db.upgrade(engine, "0004")
        with db.writer(engine).begin() as c:
            c.execute(text("INSERT INTO tenants VALUES ('t1', 'acme', '2026-01-01')"))
            c.execute(text(
                "INSERT INTO networks (id, tenant_id, name, cidr, gateway, domain, dns_servers,"
                " domain_search, mtu, lease_seconds, vlan_id, created_at, updated_at) VALUES"
                " ('n1', 't1', 'web', '10.0.0.0/24', '10.0.0.1', 'w.example', '[]', '[]', 0,"
                " 3600, 100, '2026-01-01', '2026-01-01')"))
            c.execute(text(
                "INSERT INTO routers (id, tenant_id, network_id, backend, host,"
                " desired_generation, applied_generation, public_mac, guest_mac, services,"
                " last_error, reachable, created_at, updated_at) VALUES ('r1', 't1', 'n1',"
                " 'netns', 'local', 4, 4, '02:00:00:00:00:01', '02:00:00:00:00:02', '[]', '',"
                " 1, '2026-01-01', '2026-01-01')"))
            c.execute(text("INSERT INTO mac_addresses (mac, router_id) VALUES"
                           " ('02:00:00:00:00:01', 'r1'), ('02:00:00:00:00:02', 'r1')"))
        db.upgrade(engine)
        with engine.connect() as c:
            assert c.execute(text("SELECT id, network_id, vpc_id, desired_generation"
                                  " FROM routers")).all() == [("r1", "n1", None, 4)]
            assert c.execute(text("SELECT count(*) FROM mac_addresses"
                                  " WHERE router_id = 'r1'")).scalar() == 2
            # Foreign keys still hold after the rebuild.
            assert c.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        engine.dispose()
