"""Migration 0020 on a database with data: a network's records are kept (no
VPC), a VPC's record (no network) can then be stored; going back drops the
VPC's records only."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

from netmgr.store import engine as db

NOW = "'2026-01-01'"


def test_upgrade_to_0020_keeps_network_records_and_takes_vpc_ones(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/old.db")
    try:
        db.upgrade(engine, "0016")
        with db.writer(engine).begin() as c:
            c.execute(text(f"INSERT INTO tenants VALUES ('t1', 'acme', {NOW})"))
            c.execute(text(
                "INSERT INTO networks (id, tenant_id, name, cidr, gateway, domain, dns_servers,"
                " domain_search, mtu, lease_seconds, vlan_id, created_at, updated_at) VALUES"
                " ('n1', 't1', 'web', '10.0.0.0/24', '10.0.0.1', 'w.example', '[]', '[]', 0,"
                f" 3600, 100, {NOW}, {NOW})"))
            c.execute(text(
                "INSERT INTO dns_records (id, tenant_id, network_id, name, type, value,"
                f" generation, error, created_at) VALUES ('r1', 't1', 'n1', 'www.w.example',"
                f" 'A', '10.0.0.5', 2, '', {NOW})"))
        db.upgrade(engine, "0020")
        with db.writer(engine).begin() as c:
            assert c.execute(text("SELECT id, network_id, vpc_id FROM dns_records")).all() == [
                ("r1", "n1", None)]
            c.execute(text(f"INSERT INTO vpcs VALUES ('v1', 't1', 'shop', '10.1.0.0/16',"
                           f" 's.example', {NOW}, {NOW})"))
            c.execute(text(
                "INSERT INTO dns_records (id, tenant_id, network_id, vpc_id, name, type, value,"
                " generation, error, created_at) VALUES ('r2', 't1', NULL, 'v1',"
                f" 'www.s.example', 'A', '10.1.0.5', 3, '', {NOW})"))
            assert c.execute(text("PRAGMA foreign_key_check")).all() == []
        cfg = db.alembic_config()
        with db.writer(engine).begin() as c:
            cfg.attributes["connection"] = c
            command.downgrade(cfg, "0016")
        with engine.connect() as c:
            assert c.execute(text("SELECT id, network_id FROM dns_records")).all() == [
                ("r1", "n1")]
    finally:
        engine.dispose()
