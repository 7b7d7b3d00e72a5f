"""Migration 0017 on a database with data: the address columns are widened in
place (on SQLite only their declared type changes: no table rebuild that
would cascade into ports and MACs), existing rows read as IPv4 only and not
routed, an IPv6 address fits, and a downgrade gives the old declarations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from netmgr.store import engine as db


def _fill(engine) -> None:
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


def _length(engine, table: str, column: str) -> int:
    col = next(c for c in inspect(engine).get_columns(table) if c["name"] == column)
    return int(col["type"].length)


def test_upgrade_to_0017_keeps_the_rows_and_widens_the_addresses(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/old.db")
    try:
        db.upgrade(engine, "0011")
        _fill(engine)
        assert (_length(engine, "ports", "ip"), _length(engine, "networks", "cidr")) == (15, 18)
        db.upgrade(engine)
        engine.dispose()  # a new connection reads the new schema
        assert (_length(engine, "ports", "ip"), _length(engine, "networks", "cidr")) == (45, 49)
        assert _length(engine, "vpc_static_routes", "next_hop") == 45
        with engine.connect() as c:
            assert c.execute(text("SELECT id, ip, generation, ipv6 FROM ports")).all() == [
                ("p1", "10.0.0.2", 3, None)]
            assert c.execute(text("SELECT ipv6_cidr, ipv6_mode, routed FROM networks")).all() \
                == [(None, "", 0)]
            assert c.execute(text("SELECT ipv6_pool, bgp_asn, bgp_peers FROM zone")).all() == []
            assert c.execute(text("SELECT count(*) FROM mac_addresses")).scalar() == 1
            assert c.execute(text("PRAGMA foreign_key_check")).all() == []
            assert c.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        with db.writer(engine).begin() as c:
            c.execute(text("UPDATE ports SET ipv6 = '2001:db8:10::ffff:ffff:ffff:ffff'"))
        # Down again: the old declarations, the rows kept.
        cfg = db.alembic_config()
        from alembic import command

        with db.writer(engine).begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0011")
        engine.dispose()
        assert (_length(engine, "ports", "ip"), _length(engine, "networks", "cidr")) == (15, 18)
        with engine.connect() as c:
            assert c.execute(text("SELECT id, ip FROM ports")).all() == [("p1", "10.0.0.2")]
    finally:
        engine.dispose()
