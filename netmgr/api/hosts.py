"""Compute hosts registered by compute agents (issue 3): table, store, servicer.

A compute agent registers its host at start (admin token): name, gRPC
address, fabric and capacity. Registering an existing name updates it, so an
agent that restarts (or moves) just registers again. The table comes with
migration 0003.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import grpc
from cloudnet.netmgr.v1 import hosts_pb2 as pb
from cloudnet.netmgr.v1 import hosts_pb2_grpc as rpc
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import InvalidArgument, NotFound, Violation
from netmgr.model.validation import check_id
from netmgr.store.base import StoreBase, new_id
from netmgr.store.tables.core import utcnow
from netmgr.store.tables.hosts import HostRow

FABRICS = ("ovs", "vxlan", "linuxbridge")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ADDRESS = re.compile(r"(unix://)?[A-Za-z0-9._:/\[\]-]{1,255}")
MAX_VCPUS = 4096
MAX_MEMORY_MIB = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Host:
    id: str
    name: str
    address: str
    fabric: str
    vcpus: int
    memory_mib: int
    created_at: dt.datetime
    updated_at: dt.datetime


def _host(row: HostRow) -> Host:
    return Host(row.id, row.name, row.address, row.fabric, row.vcpus, row.memory_mib,
                row.created_at.replace(tzinfo=dt.UTC), row.updated_at.replace(tzinfo=dt.UTC))


def check_host(h: pb.Host, prefix: str = "host") -> None:
    bad: list[Violation] = []
    if not _LABEL.fullmatch(h.name):
        bad.append(Violation(f"{prefix}.name", "must be an RFC 1123 label (a-z, 0-9, -)"))
    if not _ADDRESS.fullmatch(h.address):
        bad.append(Violation(f"{prefix}.address", "must be host:port or unix:///path"))
    if h.fabric not in FABRICS:
        bad.append(Violation(f"{prefix}.fabric", f"must be one of {', '.join(FABRICS)}"))
    if not 1 <= h.vcpus <= MAX_VCPUS:
        bad.append(Violation(f"{prefix}.vcpus", f"must be 1-{MAX_VCPUS}"))
    if not 1 <= h.memory_mib <= MAX_MEMORY_MIB:
        bad.append(Violation(f"{prefix}.memory_mib", f"must be 1-{MAX_MEMORY_MIB}"))
    if bad:
        raise InvalidArgument(bad)


class HostStore:
    def __init__(self, store: StoreBase) -> None:
        self._store = store

    def register(self, h: pb.Host) -> Host:
        check_host(h)

        def tx(s: Session) -> Host:
            row = s.scalar(select(HostRow).where(HostRow.name == h.name))
            now = utcnow()
            if row is None:
                row = HostRow(id=new_id(), name=h.name, created_at=now)
                s.add(row)
            row.address, row.fabric = h.address, h.fabric
            row.vcpus, row.memory_mib, row.updated_at = h.vcpus, h.memory_mib, now
            s.flush()
            return _host(row)

        return self._store._write(tx)

    def get(self, host_id: str) -> Host:
        check_id(host_id)

        def tx(s: Session) -> Host:
            row = s.get(HostRow, host_id)
            if row is None:
                raise NotFound(f"host {host_id} not found")
            return _host(row)

        return self._store._read(tx)

    def list(self) -> list[Host]:
        return self._store._read(
            lambda s: [_host(r) for r in s.scalars(select(HostRow).order_by(HostRow.name))])

    def delete(self, host_id: str) -> None:
        check_id(host_id)

        def tx(s: Session) -> None:
            row = s.get(HostRow, host_id)
            if row is None:
                raise NotFound(f"host {host_id} not found")
            s.delete(row)

        self._store._write(tx)


def host_to_pb(h: Host) -> pb.Host:
    out = pb.Host(id=h.id, name=h.name, address=h.address, fabric=h.fabric, vcpus=h.vcpus,
                  memory_mib=h.memory_mib)
    out.create_time.FromDatetime(h.created_at)
    out.update_time.FromDatetime(h.updated_at)
    return out


class HostServicer(rpc.HostServiceServicer):
    """Admin only (the auth policy's default for services it does not list)."""

    def __init__(self, store: StoreBase) -> None:
        self._hosts = HostStore(store)

    def RegisterHost(self, request: pb.RegisterHostRequest,
                     context: grpc.ServicerContext) -> pb.Host:
        return host_to_pb(self._hosts.register(request.host))

    def GetHost(self, request: pb.GetHostRequest, context: grpc.ServicerContext) -> pb.Host:
        return host_to_pb(self._hosts.get(request.id))

    def ListHosts(self, request: pb.ListHostsRequest,
                  context: grpc.ServicerContext) -> pb.ListHostsResponse:
        return pb.ListHostsResponse(hosts=[host_to_pb(h) for h in self._hosts.list()])

    def DeleteHost(self, request: pb.DeleteHostRequest,
                   context: grpc.ServicerContext) -> pb.DeleteHostResponse:
        self._hosts.delete(request.id)
        return pb.DeleteHostResponse()


SERVICES = (pb.DESCRIPTOR.services_by_name["HostService"].full_name,)


def add_to_server(store: StoreBase, server: grpc.Server) -> tuple[str, ...]:
    rpc.add_HostServiceServicer_to_server(HostServicer(store), server)  # type: ignore[no-untyped-call]
    return SERVICES
