"""Router VMs in the store (VM backend, issue 4): rows, allocation, API fields.

A router of the VM backend gets one row (netmgr/db_router_vm.py) the first
time the backend tends it: a control address (lowest free one of the
control CIDR, .1 is netmgr's side) and a control NIC MAC (claimed in the
global MAC table, owned by the router, so it goes with it). Both stay for
the router's life: a replacement VM answers on the same address with the
same NICs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from typing import Any

from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from common.grpc_errors import ResourceExhausted
from netmgr.store import ipam
from netmgr.store.base import StoreBase
from netmgr.store.tables.core import RouterRow, utcnow
from netmgr.store.tables.router_vms import RouterVmRow

STATES = ("deploying", "booting", "active", "replacing", "failed")
_PB_STATES = {
    "deploying": pb.ROUTER_VM_STATE_DEPLOYING,
    "booting": pb.ROUTER_VM_STATE_BOOTING,
    "active": pb.ROUTER_VM_STATE_ACTIVE,
    "replacing": pb.ROUTER_VM_STATE_REPLACING,
    "failed": pb.ROUTER_VM_STATE_FAILED,
}


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


def _vm(row: RouterVmRow) -> RouterVm:
    def utc(t: dt.datetime | None) -> dt.datetime | None:
        return t.replace(tzinfo=dt.UTC) if t is not None else None

    return RouterVm(row.router_id, row.host, row.control_ip, row.control_mac,
                    row.cred_generation, row.token_sha256, row.state, row.detail,
                    row.replacements, utc(row.defined_at), utc(row.healthy_at),
                    row.boot_seconds)


class RouterVmStore:
    def __init__(self, store: StoreBase, control_cidr: str) -> None:
        self._store = store
        self.cidr = ipaddress.IPv4Network(control_cidr)

    def ensure(self, router_id: str) -> RouterVm:
        """The router's row, allocating its control address and MAC the first time."""

        def tx(s: Session) -> RouterVm:
            row = s.get(RouterVmRow, router_id)
            if row is None:
                used = set(s.scalars(select(RouterVmRow.control_ip)))
                hosts = self.cidr.hosts()
                next(hosts)  # .1: netmgr's side of the control network
                ip = next((str(a) for a in hosts if str(a) not in used), None)
                if ip is None:
                    raise ResourceExhausted("control_cidr", f"{self.cidr} has no free address")
                mac = ipam.allocate_mac(s)
                ipam.claim_mac(s, mac, router_id=router_id, field="router.control_mac")
                row = RouterVmRow(router_id=router_id, host="", control_ip=ip, control_mac=mac,
                                  cred_generation=0, token_sha256="", state="deploying",
                                  detail="", replacements=0, defined_at=None, healthy_at=None,
                                  boot_seconds=0.0)
                s.add(row)
                s.flush()
            return _vm(row)

        return self._store._write(tx)

    def get(self, router_id: str) -> RouterVm | None:
        def tx(s: Session) -> RouterVm | None:
            row = s.get(RouterVmRow, router_id)
            return _vm(row) if row is not None else None

        return self._store._read(tx)

    def all(self) -> dict[str, RouterVm]:
        return self._store._read(
            lambda s: {r.router_id: _vm(r) for r in s.scalars(select(RouterVmRow))})

    def count_by_host(self) -> dict[str, int]:
        return self._store._read(lambda s: dict(s.execute(  # type: ignore[arg-type]
            select(RouterVmRow.host, func.count()).group_by(RouterVmRow.host)).all()))

    def update(self, router_id: str, **fields: Any) -> RouterVm | None:
        """Set fields of the row (and the router's host with `host`); None if gone."""
        if "state" in fields:
            assert fields["state"] in STATES, fields["state"]

        def tx(s: Session) -> RouterVm | None:
            row = s.get(RouterVmRow, router_id)
            if row is None:
                return None
            for k, v in fields.items():
                setattr(row, k, v)
            if "host" in fields:
                s.execute(update(RouterRow).where(RouterRow.id == router_id)
                          .values(host=fields["host"], updated_at=utcnow()))
            s.flush()
            return _vm(row)

        return self._store._write(tx)


def fill(store: StoreBase, routers: list[pb.Router]) -> None:
    """Add the VM fields (13-19) to API routers of the VM backend."""
    ids = [r.id for r in routers if r.backend == "vm"]
    if not ids:
        return
    rows = store._read(lambda s: {r.router_id: _vm(r) for r in s.scalars(
        select(RouterVmRow).where(RouterVmRow.router_id.in_(ids)))})
    for r in routers:
        vm = rows.get(r.id)
        if vm is None:
            if r.backend == "vm":
                r.vm_state = pb.ROUTER_VM_STATE_DEPLOYING
            continue
        r.vm_state = _PB_STATES[vm.state]
        r.vm_host = vm.host
        if vm.healthy_at is not None:
            r.vm_boot_time.FromDatetime(vm.healthy_at)
        r.vm_boot_seconds = vm.boot_seconds
        r.vm_replacements = vm.replacements
        r.vm_detail = vm.detail
        r.control_address = vm.control_ip
