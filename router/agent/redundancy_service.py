"""The RouterRedundancy gRPC service of the router agent: netmgr's hand on
one instance of a redundant router (``keepalived.set_demoted``)."""

from __future__ import annotations

from typing import Any

import grpc
from cloudnet.router.v1 import redundancy_pb2 as pb
from cloudnet.router.v1 import redundancy_pb2_grpc

from router.agent.registry import RouterRegistry
from router.errors import RequestError
from router.services import keepalived

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["RouterRedundancy"].full_name


class RouterRedundancyServicer(redundancy_pb2_grpc.RouterRedundancyServicer):
    def __init__(self, registry: RouterRegistry) -> None:
        self.registry = registry

    def SetDemoted(self, request: pb.SetDemotedRequest, context: Any) -> pb.RedundancyStatus:
        rt = self.registry.runtime(request.router_id, create=False)
        status, cfg = rt.status_and_config()
        if cfg is None or not cfg.HasField("redundancy"):
            raise RequestError(f"router {request.router_id} is not redundant")
        keepalived.set_demoted(rt.ctx, request.demoted)
        out = pb.RedundancyStatus()
        out.CopyFrom(status.redundancy)
        out.demoted = request.demoted
        return out


def add_to_server(registry: RouterRegistry, server: grpc.Server) -> str:
    """Registers the service; returns its full name (for reflection)."""
    redundancy_pb2_grpc.add_RouterRedundancyServicer_to_server(
        RouterRedundancyServicer(registry), server)
    return SERVICE_NAME
