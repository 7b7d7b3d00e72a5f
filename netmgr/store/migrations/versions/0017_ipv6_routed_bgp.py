"""IPv6 dual stack, routed networks and BGP: the zone's pools, edge and BGP
settings; a network's /64, IPv6 mode and routed flag; a port's IPv6
address; every address and CIDR column widened for IPv6.

Revision ID: 0017
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None

IP4, IP6 = sa.String(15), sa.String(45)
CIDR4, CIDR6 = sa.String(18), sa.String(49)
# table -> (column, old type, new type)
WIDENED = {
    "zone": (("public_cidr", CIDR4, CIDR6), ("public_gateway", IP4, IP6),
             ("public_pool_start", IP4, IP6), ("public_pool_end", IP4, IP6)),
    "networks": (("cidr", CIDR4, CIDR6), ("gateway", IP4, IP6)),
    "ports": (("ip", IP4, IP6),),
    "public_ips": (("ip", IP4, IP6),),
    "vpcs": (("cidr", CIDR4, CIDR6),),
    "vpc_private_gateways": (("address", CIDR4, CIDR6), ("gateway", IP4, IP6)),
    "vpc_static_routes": (("cidr", CIDR4, CIDR6), ("next_hop", IP4, IP6)),
    "customer_gateways": (("peer_address", IP4, IP6),),
}


def _retype_sqlite(to_new: bool) -> None:
    """SQLite stores text whatever VARCHAR's length says: only the declared
    type in the schema changes (a table rebuild would cascade the DROP of
    networks and ports into the rows that reference them). Rewriting the
    declaration is safe: the affinity (TEXT) and every stored row stay."""
    conn = op.get_bind()
    conn.exec_driver_sql("PRAGMA writable_schema=ON")
    for table, columns in WIDENED.items():
        sql = str(conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).scalar())
        for column, old, new in columns:
            src, dst = (old, new) if to_new else (new, old)
            sql = re.sub(rf'(["`]?\b{column}\b["`]?\s+)VARCHAR\({src.length}\)',
                         rf"\g<1>VARCHAR({dst.length})", sql, count=1)
        conn.exec_driver_sql(
            "UPDATE sqlite_master SET sql=? WHERE type='table' AND name=?", (sql, table))
    version = int(str(conn.exec_driver_sql("PRAGMA schema_version").scalar()))
    conn.exec_driver_sql(f"PRAGMA schema_version={version + 1}")
    conn.exec_driver_sql("PRAGMA writable_schema=OFF")


def _retype(to_new: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _retype_sqlite(to_new)
        return
    for table, columns in WIDENED.items():
        for column, old, new in columns:
            op.alter_column(table, column, type_=new if to_new else old,
                            existing_type=old if to_new else new, existing_nullable=False)


def upgrade() -> None:
    _retype(to_new=True)
    for column in ("ipv6_pool", "routed_pool", "public_cidr6"):
        op.add_column("zone", sa.Column(column, CIDR6, nullable=False, server_default=""))
    op.add_column("zone", sa.Column("public_gateway6", IP6, nullable=False, server_default=""))
    op.add_column("zone", sa.Column("bgp_asn", sa.BigInteger(), nullable=False,
                                    server_default="0"))
    op.add_column("zone", sa.Column("bgp_peers", sa.JSON(), nullable=False,
                                    server_default=sa.text("'[]'")))
    op.add_column("networks", sa.Column("ipv6_cidr", CIDR6, nullable=True))
    op.add_column("networks", sa.Column("ipv6_mode", sa.String(24), nullable=False,
                                        server_default=""))
    op.add_column("networks", sa.Column("routed", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.create_index("ix_networks_ipv6_cidr", "networks", ["ipv6_cidr"], unique=True)
    op.add_column("ports", sa.Column("ipv6", IP6, nullable=True))
    op.create_index("ix_ports_network_ipv6", "ports", ["network_id", "ipv6"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_ports_network_ipv6", table_name="ports")
    op.drop_column("ports", "ipv6")
    op.drop_index("ix_networks_ipv6_cidr", table_name="networks")
    for column in ("routed", "ipv6_mode", "ipv6_cidr"):
        op.drop_column("networks", column)
    for column in ("bgp_peers", "bgp_asn", "public_gateway6", "public_cidr6", "routed_pool",
                   "ipv6_pool"):
        op.drop_column("zone", column)
    _retype(to_new=False)
