"""RouterVmService: a router VM's serial console, tenant-scoped (VM backend)."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import router_vm_pb2 as pb
from cloudnet.netmgr.v1 import router_vm_pb2_grpc as rpc

from common.grpc_errors import FailedPrecondition, InvalidArgument
from netmgr.api.auth import current_caller
from netmgr.api.core import RouterHooks
from netmgr.model.core import RouterBackend
from netmgr.store.facade import Store

MAX_OFFSET = 1 << 40


class RouterVmServicer(rpc.RouterVmServiceServicer):
    def __init__(self, store: Store, hooks: RouterHooks) -> None:
        self._store = store
        self._hooks = hooks

    def GetRouterConsole(self, request: pb.GetRouterConsoleRequest,
                         context: grpc.ServicerContext) -> pb.RouterConsole:
        if request.offset > MAX_OFFSET:
            raise InvalidArgument.one("offset", f"must be at most {MAX_OFFSET}")
        # NOT_FOUND for another tenant's router (and a malformed ID names `id`).
        router = self._store.get_router(current_caller().require_tenant(), request.id)
        if router.backend != RouterBackend.VM:
            raise FailedPrecondition(f"router {router.id} is not a VM (backend "
                                     f"{router.backend}): it has no console")
        data, next_offset, host = self._hooks.router_console(router.id, request.offset)
        return pb.RouterConsole(data=data, next_offset=next_offset, host=host)


SERVICE: str = pb.DESCRIPTOR.services_by_name["RouterVmService"].full_name


def add_to_server(store: Store, hooks: RouterHooks, server: grpc.Server) -> str:
    rpc.add_RouterVmServiceServicer_to_server(RouterVmServicer(store, hooks), server)
    return SERVICE
