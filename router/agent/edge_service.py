"""The RouterEdge gRPC service of the router agent: edge deltas and counters
(``router.services.nftables.delta``), beside RouterAgent on the same server."""

from __future__ import annotations

from typing import Any

import grpc
from cloudnet.router.v1 import edge_pb2 as pb
from cloudnet.router.v1 import edge_pb2_grpc

from router.agent.server import Agent, NotFound, RequestError, _rpc
from router.services.nftables import counters as edge_counters
from router.services.nftables import delta as edge_delta


class RouterEdgeServicer(edge_pb2_grpc.RouterEdgeServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    @_rpc
    def ApplyEdgeDelta(self, request: pb.ApplyEdgeDeltaRequest,
                       context: Any) -> pb.ApplyEdgeDeltaResponse:
        if not request.delta.router_id:
            raise RequestError("delta.router_id is required")
        try:
            rt = self.agent.runtime(request.delta.router_id, create=False)
        except NotFound:
            return pb.ApplyEdgeDeltaResponse(stale=True)  # a full push creates it
        return edge_delta.apply_delta(rt, request.delta)

    @_rpc
    def GetEdgeCounters(self, request: pb.GetEdgeCountersRequest,
                        context: Any) -> pb.GetEdgeCountersResponse:
        rt = self.agent.runtime(request.router_id, create=False)
        wanted = {(o.kind, o.id) for o in request.objects}
        return pb.GetEdgeCountersResponse(counters=edge_counters.counters(rt, wanted))


def add_to_server(agent: Agent, server: grpc.Server) -> str:
    edge_pb2_grpc.add_RouterEdgeServicer_to_server(RouterEdgeServicer(agent), server)
    return pb.DESCRIPTOR.services_by_name["RouterEdge"].full_name
