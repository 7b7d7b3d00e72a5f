"""RouterRedundancyService: a network's or VPC's router as two instances
(``netmgr.store.redundancy``); tenant-scoped."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import redundancy_pb2 as pb
from cloudnet.netmgr.v1 import redundancy_pb2_grpc as rpc

from netmgr.api.auth import current_caller
from netmgr.api.convert_redundancy import redundancy_to_pb
from netmgr.api.core import RouterHooks
from netmgr.store.facade import Store


class RouterRedundancyServicer(rpc.RouterRedundancyServiceServicer):
    def __init__(self, store: Store, hooks: RouterHooks) -> None:
        self._store = store
        self._hooks = hooks

    def SetRedundancy(self, request: pb.SetRedundancyRequest,
                      context: grpc.ServicerContext) -> pb.RouterRedundancy:
        router_id, red = self._store.redundancy.set_redundancy(
            current_caller().require_tenant(), request.network_id, request.vpc_id,
            request.redundant)
        self._hooks.notify(router_id)
        return redundancy_to_pb(router_id, red)

    def GetRedundancy(self, request: pb.GetRedundancyRequest,
                      context: grpc.ServicerContext) -> pb.RouterRedundancy:
        router_id, red = self._store.redundancy.of(
            current_caller().require_tenant(), request.network_id, request.vpc_id)
        return redundancy_to_pb(router_id, red)

    def Failover(self, request: pb.FailoverRequest,
                 context: grpc.ServicerContext) -> pb.RouterRedundancy:
        router_id, red = self._store.redundancy.failover(
            current_caller().require_tenant(), request.network_id, request.vpc_id)
        self._hooks.notify(router_id)
        return redundancy_to_pb(router_id, red)


SERVICE: str = pb.DESCRIPTOR.services_by_name["RouterRedundancyService"].full_name


def add_to_server(store: Store, hooks: RouterHooks, server: grpc.Server) -> str:
    rpc.add_RouterRedundancyServiceServicer_to_server(
        RouterRedundancyServicer(store, hooks), server)
    return SERVICE
