"""Router VMs in the store (the VM backend): rows and allocation.

A router of the VM backend gets one row (``tables.router_vms``) the first
time the backend tends it: a control address (lowest free one of the
control CIDR, .1 is netmgr's side) and a control NIC MAC (claimed in the
global MAC table, owned by the router, so it goes with it). Both stay for
the router's life: a replacement VM answers on the same address with the
same NICs.

A redundant router has a second VM (instance 1, ``tables.router_vm_peers``)
with its own host, control address and MAC, credentials and life; the
``instance`` argument of each method picks it. Its host is the redundancy's
``peer_host`` (as instance 0's is the router's ``host``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from common.grpc_errors import ResourceExhausted
from netmgr.store import ipam
from netmgr.store.base import Database
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import MacRow, RouterRow
from netmgr.store.tables.redundancy import RouterRedundancyRow
from netmgr.store.tables.router_vms import RouterVmPeerRow, RouterVmRow

STATES = ("deploying", "booting", "active", "replacing", "failed")


@dataclasses.dataclass(frozen=True)
class RouterVm:
    router_id: str
    host: str
    control_ip: str
    control_mac: str
    cred_generation: int
    token_sha256: str
    state: str
    detail: str
    replacements: int
    defined_at: dt.datetime | None
    healthy_at: dt.datetime | None
    boot_seconds: float


_TABLES: tuple[type[RouterVmRow] | type[RouterVmPeerRow], ...] = (RouterVmRow, RouterVmPeerRow)


def _table(instance: int) -> type[RouterVmRow] | type[RouterVmPeerRow]:
    assert instance in (0, 1), instance
    return _TABLES[instance]


def _vm(row: Any) -> RouterVm:  # a RouterVmRow or RouterVmPeerRow
    def utc(t: dt.datetime | None) -> dt.datetime | None:
        return t.replace(tzinfo=dt.UTC) if t is not None else None

    return RouterVm(row.router_id, row.host, row.control_ip, row.control_mac,
                    row.cred_generation, row.token_sha256, row.state, row.detail,
                    row.replacements, utc(row.defined_at), utc(row.healthy_at),
                    row.boot_seconds)


def read_router_vms(db: Database, router_ids: Collection[str]) -> dict[str, RouterVm]:
    """The rows of these routers (those of the VM backend that have one)."""
    if not router_ids:
        return {}
    return db.read(lambda s: {r.router_id: _vm(r) for r in s.scalars(
        select(RouterVmRow).where(RouterVmRow.router_id.in_(list(router_ids))))})


class RouterVmStore:
    def __init__(self, db: Database, control_cidr: str) -> None:
        self._db = db
        self.cidr = ipaddress.IPv4Network(control_cidr)

    def ensure(self, router_id: str, instance: int = 0) -> RouterVm:
        """The router's row (its instance 1's: a redundant router's second
        VM), allocating its control address and MAC the first time."""
        table = _table(instance)

        def tx(s: Session) -> RouterVm:
            row = s.get(table, router_id)
            if row is None:
                used = {ip for t in _TABLES for ip in s.scalars(select(t.control_ip))}
                hosts = self.cidr.hosts()
                next(hosts)  # .1: netmgr's side of the control network
                ip = next((str(a) for a in hosts if str(a) not in used), None)
                if ip is None:
                    raise ResourceExhausted("control_cidr", f"{self.cidr} has no free address")
                mac = ipam.allocate_mac(s)
                ipam.claim_mac(s, mac, router_id=router_id, field="router.control_mac")
                row = table(router_id=router_id, host="", control_ip=ip, control_mac=mac,
                                  cred_generation=0, token_sha256="", state="deploying",
                                  detail="", replacements=0, defined_at=None, healthy_at=None,
                                  boot_seconds=0.0)
                s.add(row)
                s.flush()
            return _vm(row)

        return self._db.write(tx)

    def get(self, router_id: str, instance: int = 0) -> RouterVm | None:
        table = _table(instance)

        def tx(s: Session) -> RouterVm | None:
            row = s.get(table, router_id)
            return _vm(row) if row is not None else None

        return self._db.read(tx)

    def all(self, instance: int = 0) -> dict[str, RouterVm]:
        table = _table(instance)
        return self._db.read(
            lambda s: {r.router_id: _vm(r) for r in s.scalars(select(table))})  # type: ignore[attr-defined]

    def count_by_host(self) -> dict[str, int]:
        """Router VMs per compute host (either instance)."""
        out: dict[str, int] = {}
        for table in _TABLES:
            got = self._db.read(lambda s, t=table: list(s.execute(  # type: ignore[misc]
                select(t.host, func.count()).group_by(t.host))))
            for host, count in got:
                out[host] = out.get(host, 0) + count
        return out

    def update(self, router_id: str, instance: int = 0, **fields: Any) -> RouterVm | None:
        """Set fields of the row (and with `host` the router's host, or for
        instance 1 the redundancy's peer host); None if gone."""
        if "state" in fields:
            assert fields["state"] in STATES, fields["state"]
        table = _table(instance)

        def tx(s: Session) -> RouterVm | None:
            row = s.get(table, router_id)
            if row is None:
                return None
            for k, v in fields.items():
                setattr(row, k, v)
            if "host" in fields and instance == 0:
                s.execute(update(RouterRow).where(RouterRow.id == router_id)
                          .values(host=fields["host"], updated_at=utcnow()))
            elif fields.get("host"):
                s.execute(update(RouterRedundancyRow)
                          .where(RouterRedundancyRow.router_id == router_id)
                          .values(peer_host=fields["host"], updated_at=utcnow()))
            s.flush()
            return _vm(row)

        return self._db.write(tx)

    def drop_peer(self, router_id: str) -> RouterVm | None:
        """A router made single again: its second VM's row goes (and its
        control MAC's claim); returns what it was, None if there was none."""

        def tx(s: Session) -> RouterVm | None:
            row = s.get(RouterVmPeerRow, router_id)
            if row is None:
                return None
            vm = _vm(row)
            s.delete(row)
            mac = s.get(MacRow, vm.control_mac)
            if mac is not None:
                s.delete(mac)
            s.flush()
            return vm

        return self._db.write(tx)
