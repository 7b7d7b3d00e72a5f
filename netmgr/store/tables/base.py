"""What every table module shares: the declarative base, column types, the
time convention, and the status columns of objects a router serves.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = String(36)
# Either family: an IPv6 address is up to 45 characters (IPv4-mapped), a CIDR 49.
IP = String(45)
CIDR = String(49)
MAC = String(17)


def utcnow() -> dt.datetime:
    # Naive UTC: SQLite keeps no time zone, so store and compare naive values
    # everywhere and attach UTC when building model objects.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class StatusColumns:
    """The status envelope of a tenant object a router serves (a port, an
    edge rule, an ACL rule, a route, a VPN gateway or connection): its ID,
    owner, the router generation that last changed it, the router's error
    for it and its creation time. ``rows.status`` reads them as one
    ``netmgr.model.core.Status``."""

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id", ondelete="RESTRICT"))
    generation: Mapped[int]
    error: Mapped[str] = mapped_column(String)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
