"""PortFilterService: the security groups and port security of this host's
guest NICs, as netmgr pushes them (the whole state, level-triggered).

The agent maps each port to the device its guest plugs into (a VM's tap, from
its records; a namespace guest's fabric port, from ``extra_devices``) and
hands the whole state to a ``FilterBackend``, which applies only the
differences (``common.fabric.port_firewall.PortFirewall`` on Linux bridges:
the VXLAN fabric's, or a Linux-bridge fabric's namespace). A push older than
the last one applied is ignored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import grpc
from cloudnet.compute.v1 import port_filters_pb2 as pb
from cloudnet.compute.v1 import port_filters_pb2_grpc as rpc

from common.fabric.base import FabricError
from common.fabric.port_firewall import Port, Rule
from common.grpc_errors import FailedPrecondition, PermissionDenied

SERVICE = str(pb.DESCRIPTOR.services_by_name["PortFilterService"].full_name)


class FilterBackend(Protocol):
    def setup(self) -> None: ...
    def apply(self, ports: Sequence[Port], members: Mapping[str, Sequence[str]]) -> int: ...


def port_of(msg: pb.PortFilter, device: str) -> Port:
    return Port(device, msg.mac, tuple(msg.ips), tuple((p.ip, p.mac) for p in msg.pairs),
                tuple(Rule(r.direction, r.ethertype, r.protocol, r.port_min, r.port_max,
                           r.icmp_type, r.icmp_code, r.remote_cidr, r.remote_group_id)
                      for r in msg.rules))


class PortFilterServicer(rpc.PortFilterServiceServicer):
    """`devices()`: port ID -> device of this host's guest NICs; `is_admin`
    tells whether a call's metadata carries netmgr's admin token."""

    def __init__(self, backend: FilterBackend | None, devices: Callable[[], Mapping[str, str]],
                 is_admin: Callable[[grpc.ServicerContext], bool]) -> None:
        self._backend = backend
        self._devices = devices
        self._is_admin = is_admin
        self._lock = threading.Lock()
        self.applied_generation = 0
        self._set_up = False
        self._last: pb.PortFilters | None = None

    def ApplyPortFilters(self, request: pb.PortFilters,
                         context: grpc.ServicerContext) -> pb.ApplyPortFiltersResponse:
        if not self._is_admin(context):
            raise PermissionDenied("port filters come from netmgr (the admin token)")
        if self._backend is None:
            raise FailedPrecondition("this host's fabric enforces no port filters")
        with self._lock:
            if request.generation < self.applied_generation:
                return pb.ApplyPortFiltersResponse(applied_generation=self.applied_generation)
            unknown = self._apply(request)
            self.applied_generation = request.generation
            self._last = request
            return pb.ApplyPortFiltersResponse(applied_generation=request.generation,
                                               unknown_port_ids=unknown)

    def reapply(self) -> None:
        """The last push again, now that a NIC came (a VM defined or started):
        its filters are in place before netmgr's next push."""
        with self._lock:
            if self._last is not None and self._backend is not None:
                self._apply(self._last)

    def _apply(self, request: pb.PortFilters) -> list[str]:
        assert self._backend is not None
        devices = self._devices()
        unknown = [p.port_id for p in request.ports if p.port_id not in devices]
        ports = [port_of(p, devices[p.port_id]) for p in request.ports
                 if p.port_id in devices and not p.unfiltered]
        members = {g.group_id: list(g.addresses) for g in request.groups}
        try:
            if not self._set_up:
                self._backend.setup()
                self._set_up = True
            self._backend.apply(ports, members)
        except FabricError as e:
            raise FailedPrecondition(str(e)) from e
        return unknown


def add_to_server(servicer: PortFilterServicer, server: grpc.Server) -> str:
    rpc.add_PortFilterServiceServicer_to_server(servicer, server)
    return SERVICE
