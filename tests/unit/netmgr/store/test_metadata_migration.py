"""Migration 0011 on a database with data: SQLite rebuilds ``ports`` (a new
foreign key to ssh_key_pairs); existing ports keep their rows and MACs and
read as having no user data (NULL), no labels and no key pair."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from netmgr.store import engine as db


def test_upgrade_to_0011_keeps_ports_with_empty_metadata(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/old.db")
    try:
        db.upgrade(engine, "0008")
        with db.writer(engine).begin() as c:
            c.execute(text("INSERT INTO tenants VALUES ('t1', 'acme', '2026-01-01')"))
            c.execute(text(
                "INSERT INTO networks (id, tenant_id, name, cidr, gateway, domain, dns_servers,"
                " domain_search, mtu, lease_seconds, vlan_id, created_at, updated_at) VALUES"
                " ('n1', 't1', 'web', '10.0.0.0/24', '10.0.0.1', 'w.example', '[]', '[]', 0,"
                " 3600, 100, '2026-01-01', '2026-01-01')"))
            c.execute(text(
                "INSERT INTO ports (id, tenant_id, network_id, name, mac, ip, hostname, device_id,"
                " generation, error, created_at, updated_at) VALUES ('p1', 't1', 'n1', 'vm1',"
                " '02:00:00:00:00:09', '10.0.0.2', 'vm1', '', 3, '', '2026-01-01', '2026-01-01')"))
            c.execute(text("INSERT INTO mac_addresses (mac, port_id) VALUES"
                           " ('02:00:00:00:00:09', 'p1')"))
        db.upgrade(engine)
        with engine.connect() as c:
            assert c.execute(text("SELECT id, ip, generation, user_data, labels, ssh_key_pair_id"
                                  " FROM ports")).all() == [
                ("p1", "10.0.0.2", 3, None, "{}", None)]
            assert c.execute(text("SELECT count(*) FROM mac_addresses"
                                  " WHERE port_id = 'p1'")).scalar() == 1
            assert c.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        engine.dispose()
