"""Migration 0009 on a database with a zone and a private gateway: the zone
gets no private gateway range and reserves the provider's and the control
network's VLANs; the store reads it back and allocates around them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from netmgr.store import engine as db
from netmgr.store.facade import Store


def test_upgrade_to_0009_gives_the_zone_its_vlan_plan(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    engine = db.make_engine(url)
    try:
        db.upgrade(engine, "0008")
        with db.writer(engine).begin() as c:
            c.execute(text(
                "INSERT INTO zone (id, name, public_cidr, public_gateway, public_pool_start,"
                " public_pool_end, vlan_min, vlan_max, upstream_dns, domain_suffix, updated_at)"
                " VALUES (1, 'old', '203.0.113.0/24', '203.0.113.1', '203.0.113.10',"
                " '203.0.113.250', 100, 999, '[]', 'old.example', '2026-01-01')"))
        db.upgrade(engine)
        with engine.connect() as c:
            row = c.execute(text("SELECT private_gateway_vlan_min, private_gateway_vlan_max,"
                                 " reserved_vlans FROM zone")).one()
        assert (row[0], row[1]) == (0, 0)
    finally:
        engine.dispose()
    store = Store(url)
    try:
        zone = store.get_zone()
        assert zone.name == "old"  # the stored zone, not the defaults
        assert zone.reserved_vlans == (4000, 4001)
        assert (zone.private_gateway_vlan_min, zone.private_gateway_vlan_max) == (0, 0)
    finally:
        store.close()
