"""Tables of the site-to-site VPN (migration 0007): VPN gateways, customer
gateways and connections.

A gateway belongs to a VPC (its router) or to an isolated network (its
router): exactly one of ``vpc_id`` and ``network_id``. A connection joins
a gateway and a customer gateway and, like edge rules, records the router
generation that last changed it and the router's error for it, plus the SA
state the router last reported (``sa_status``). The pre-shared key is stored
sealed (``netmgr.store.secrets``, migration 0010) to be pushed to the router;
the API never returns it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, IP, Base, StatusColumns


class VpnGatewayRow(StatusColumns, Base):
    __tablename__ = "vpn_gateways"
    __table_args__ = (Index("ix_vpn_gateways_tenant_order", "tenant_id", "created_at", "id"),)

    # One gateway per router: a VPC's, or an isolated network's.
    vpc_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("vpcs.id", ondelete="CASCADE"), unique=True, default=None)
    network_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("networks.id", ondelete="CASCADE"), unique=True, default=None)


class CustomerGatewayRow(Base):
    __tablename__ = "customer_gateways"
    __table_args__ = (Index("ix_customer_gateways_tenant_order", "tenant_id", "created_at",
                            "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    # The tenant's own description of a remote site, used by no router unless
    # a connection uses it (and connections need networks, which keep the
    # tenant): it goes with the tenant.
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    peer_address: Mapped[str] = mapped_column(IP)
    peer_cidrs: Mapped[list[str]] = mapped_column(JSON)
    # AES-GCM under netmgr's secrets key, the row's ID as associated data.
    psk_sealed: Mapped[str] = mapped_column(String(255))
    ike_version: Mapped[int]
    ike_proposals: Mapped[list[str]] = mapped_column(JSON)
    esp_proposals: Mapped[list[str]] = mapped_column(JSON)
    ike_lifetime: Mapped[int]
    esp_lifetime: Mapped[int]
    dpd_delay: Mapped[int]
    dpd_timeout: Mapped[int]
    force_encap: Mapped[bool]
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class VpnConnectionRow(StatusColumns, Base):
    __tablename__ = "vpn_connections"
    __table_args__ = (Index("ix_vpn_connections_tenant_order", "tenant_id", "created_at", "id"),)

    vpn_gateway_id: Mapped[str] = mapped_column(
        ID, ForeignKey("vpn_gateways.id", ondelete="CASCADE"), index=True)
    # A customer gateway in use cannot be deleted.
    customer_gateway_id: Mapped[str] = mapped_column(
        ID, ForeignKey("customer_gateways.id", ondelete="RESTRICT"), index=True)
    passive: Mapped[bool]
    reset_serial: Mapped[int]
    # VpnTunnelStatus as last reported by the router (JSON of its fields).
    sa_status: Mapped[dict[str, Any]] = mapped_column(JSON)
