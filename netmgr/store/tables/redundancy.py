"""A redundant router's second instance and what its instances report
(migration 0016); see ``netmgr.store.redundancy``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, Base


class RouterRedundancyRow(Base):
    """A row: the router is redundant. Instance 0 runs on ``routers.host``,
    instance 1 on ``peer_host``."""

    __tablename__ = "router_redundancy"

    router_id: Mapped[str] = mapped_column(
        ID, ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True)
    peer_host: Mapped[str] = mapped_column(String(253))
    # The link between the two instances (VRRP, conntrackd): a VLAN of the
    # zone's network range, never a network's.
    sync_vlan: Mapped[int] = mapped_column(unique=True)
    virtual_router_id: Mapped[int]
    # The instance with the higher VRRP priority (a failover flips it).
    preferred: Mapped[int]
    # [{"instance", "host", "role", "healthy", "since", "priority", "demoted",
    #   "reachable", "detail"}] as last reported, one per instance.
    instances: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The arbiter's events, newest last (at most EVENTS_KEPT).
    events: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
