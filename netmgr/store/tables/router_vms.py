"""The router VMs table (migration 0004); see ``netmgr.store.router_vms``.

One row per router of the VM backend (and one per redundant router's second
VM): where its VM runs, the control
address and NIC MAC it keeps across replacements, the credential generation
(its token is derived from netmgr's router key, only a hash is stored), and
what the API shows of the VM's life.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from netmgr.store.tables.base import ID, MAC, Base


class _RouterVmColumns:
    """What a router VM's row holds (instance 0's table and instance 1's)."""

    # The compute host's name (hosts.name); "" until placed.
    host: Mapped[str] = mapped_column(String(63))
    control_ip: Mapped[str] = mapped_column(String(45), unique=True)
    control_mac: Mapped[str] = mapped_column(MAC, unique=True)
    cred_generation: Mapped[int]
    # sha256 of the current token (hex): to check a token, never to make one.
    token_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(1024))
    replacements: Mapped[int]
    defined_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    healthy_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    boot_seconds: Mapped[float] = mapped_column(Float)


class RouterVmRow(_RouterVmColumns, Base):
    __tablename__ = "router_vms"

    router_id: Mapped[str] = mapped_column(
        ID, ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True)


class RouterVmPeerRow(_RouterVmColumns, Base):
    """A redundant router's second VM (instance 1, migration 0022): its own
    host, control address and MAC, credential generation and life. Control
    addresses and MACs are unique across both tables (the store allocates
    from both)."""

    __tablename__ = "router_vm_peers"

    router_id: Mapped[str] = mapped_column(
        ID, ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True)
