"""The HostService servicer: compute agents register their hosts (admin only,
the auth policy's default for services it does not list)."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import hosts_pb2 as pb
from cloudnet.netmgr.v1 import hosts_pb2_grpc as rpc
from cloudnet.router.v1 import registration_pb2 as reg_pb
from cloudnet.router.v1 import registration_pb2_grpc as reg_rpc

from netmgr.api.convert import host_spec, host_to_pb
from netmgr.model.hosts import HostSpec
from netmgr.store.facade import Store
from netmgr.store.hosts import HostStore


class HostServicer(rpc.HostServiceServicer):
    def __init__(self, hosts: HostStore) -> None:
        self._hosts = hosts

    def RegisterHost(self, request: pb.RegisterHostRequest,
                     context: grpc.ServicerContext) -> pb.Host:
        return host_to_pb(self._hosts.register(host_spec(request.host)))

    def GetHost(self, request: pb.GetHostRequest, context: grpc.ServicerContext) -> pb.Host:
        return host_to_pb(self._hosts.get(request.id))

    def ListHosts(self, request: pb.ListHostsRequest,
                  context: grpc.ServicerContext) -> pb.ListHostsResponse:
        return pb.ListHostsResponse(hosts=[host_to_pb(h) for h in self._hosts.list()])

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.Host:
        return host_to_pb(self._hosts.heartbeat(request.name))

    def DeleteHost(self, request: pb.DeleteHostRequest,
                   context: grpc.ServicerContext) -> pb.DeleteHostResponse:
        self._hosts.delete(request.id)
        return pb.DeleteHostResponse()


class RouterHostRegistryServicer(reg_rpc.RouterHostRegistryServicer):
    """Router host agents register (role "router") and heartbeat (admin only)."""

    def __init__(self, hosts: HostStore) -> None:
        self._hosts = hosts

    def RegisterRouterHost(self, request: reg_pb.RegisterRouterHostRequest,
                           context: grpc.ServicerContext) -> reg_pb.RegisterRouterHostResponse:
        host = self._hosts.register(HostSpec(
            name=request.name, address=request.address, fabric=request.fabric,
            vcpus=request.vcpus, memory_mib=request.memory_mib, role="router"))
        return reg_pb.RegisterRouterHostResponse(id=host.id)

    def RouterHostHeartbeat(self, request: reg_pb.RouterHostHeartbeatRequest,
                            context: grpc.ServicerContext) -> reg_pb.RouterHostHeartbeatResponse:
        host = self._hosts.heartbeat(request.name)
        return reg_pb.RouterHostHeartbeatResponse(routers=len(host.router_ids))


SERVICES = (pb.DESCRIPTOR.services_by_name["HostService"].full_name,
            reg_pb.DESCRIPTOR.services_by_name["RouterHostRegistry"].full_name)


def add_to_server(store: Store, server: grpc.Server) -> tuple[str, ...]:
    rpc.add_HostServiceServicer_to_server(HostServicer(store.hosts), server)
    reg_rpc.add_RouterHostRegistryServicer_to_server(RouterHostRegistryServicer(store.hosts),
                                                     server)
    return SERVICES
