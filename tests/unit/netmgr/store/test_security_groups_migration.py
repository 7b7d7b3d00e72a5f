"""Migration 0015 on a database with data: every tenant gets its default
group (all egress, ingress from itself); existing ports keep their rows and
read as naming no group (so the default group filters them), with port
security on and no allowed address pairs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from netmgr.store import engine as db


def test_upgrade_to_0015_gives_every_tenant_its_default_group(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/old.db")
    try:
        db.upgrade(engine, "0011")
        with db.writer(engine).begin() as c:
            for tid, name in (("t1", "acme"), ("t2", "other")):
                c.execute(text(f"INSERT INTO tenants VALUES ('{tid}', '{name}', '2026-01-01')"))
            c.execute(text(
                "INSERT INTO networks (id, tenant_id, name, cidr, gateway, domain, dns_servers,"
                " domain_search, mtu, lease_seconds, vlan_id, created_at, updated_at) VALUES"
                " ('n1', 't1', 'web', '10.0.0.0/24', '10.0.0.1', 'w.example', '[]', '[]', 0,"
                " 3600, 100, '2026-01-01', '2026-01-01')"))
            c.execute(text(
                "INSERT INTO ports (id, tenant_id, network_id, name, mac, ip, hostname, device_id,"
                " generation, error, created_at, updated_at) VALUES ('p1', 't1', 'n1', 'vm1',"
                " '02:00:00:00:00:09', '10.0.0.2', 'vm1', '', 3, '', '2026-01-01', '2026-01-01')"))
        db.upgrade(engine)
        with engine.connect() as c:
            assert c.execute(text(
                "SELECT id, generation, security_group_ids, port_security, allowed_address_pairs"
                " FROM ports")).all() == [("p1", 3, "[]", 1, "[]")]
            groups = c.execute(text("SELECT tenant_id, name, id FROM security_groups"
                                    " ORDER BY tenant_id")).all()
            assert [(t, n) for t, n, _ in groups] == [("t1", "default"), ("t2", "default")]
            for tenant_id, _, gid in groups:
                rules = c.execute(text(
                    "SELECT direction, ethertype, protocol, remote_cidr, remote_group_id"
                    f" FROM security_group_rules WHERE security_group_id = '{gid}'"
                    f" AND tenant_id = '{tenant_id}' ORDER BY direction, ethertype")).all()
                assert rules == [("egress", "ipv4", "all", "", None),
                                 ("egress", "ipv6", "all", "", None),
                                 ("ingress", "ipv4", "all", "", gid),
                                 ("ingress", "ipv6", "all", "", gid)]
            assert c.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        engine.dispose()
