"""The RouterEdge gRPC service of the router agent: edge deltas and counters
(the nftables service's ``edge_rules``), beside RouterAgent on the same server."""

from __future__ import annotations

from typing import Any

import grpc
from cloudnet.router.v1 import edge_pb2 as pb
from cloudnet.router.v1 import edge_pb2_grpc

from router.agent.registry import RouterRegistry
from router.errors import RequestError, RouterNotFound

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["RouterEdge"].full_name


class RouterEdgeServicer(edge_pb2_grpc.RouterEdgeServicer):
    def __init__(self, registry: RouterRegistry) -> None:
        self.registry = registry

    def ApplyEdgeDelta(self, request: pb.ApplyEdgeDeltaRequest,
                       context: Any) -> pb.ApplyEdgeDeltaResponse:
        if not request.delta.router_id:
            raise RequestError("delta.router_id is required")
        try:
            return self.registry.apply_edge_delta(request.delta, request.lease_epoch)
        except RouterNotFound:
            return pb.ApplyEdgeDeltaResponse(stale=True)  # a full push creates it

    def GetEdgeCounters(self, request: pb.GetEdgeCountersRequest,
                        context: Any) -> pb.GetEdgeCountersResponse:
        rt = self.registry.runtime(request.router_id, create=False)
        wanted = {(o.kind, o.id) for o in request.objects}
        return pb.GetEdgeCountersResponse(counters=rt.edge_counters(wanted))


def add_to_server(registry: RouterRegistry, server: grpc.Server) -> str:
    """Registers the service; returns its full name (for reflection)."""
    edge_pb2_grpc.add_RouterEdgeServicer_to_server(RouterEdgeServicer(registry), server)
    return SERVICE_NAME
