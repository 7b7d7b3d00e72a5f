"""The zone's VLAN plan: the range private gateways are allocated from, and
the VLANs the fabric reserves.

An existing zone gets no private gateway range (tenants get no new private
gateway until the admin sets one; existing gateways keep their VLANs) and
reserves 4000 (the provider segment) and 4001 (the router-VM control
network), the fabric's defaults.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("zone") as batch:
        batch.add_column(sa.Column("private_gateway_vlan_min", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("private_gateway_vlan_max", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("reserved_vlans", sa.JSON(), nullable=False,
                                   server_default="[4000, 4001]"))


def downgrade() -> None:
    with op.batch_alter_table("zone") as batch:
        batch.drop_column("reserved_vlans")
        batch.drop_column("private_gateway_vlan_max")
        batch.drop_column("private_gateway_vlan_min")
