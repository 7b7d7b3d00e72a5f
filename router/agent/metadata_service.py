"""The RouterMetadata gRPC service of the router agent: guests' passwords for
the metadata service's password server, beside RouterAgent on the same server."""

from __future__ import annotations

import re
from typing import Any

import grpc
from cloudnet.router.v1 import metadata_pb2 as pb
from cloudnet.router.v1 import metadata_pb2_grpc

from router.agent.registry import RouterRegistry
from router.errors import ConfigError, RequestError
from router.lib import validate

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["RouterMetadata"].full_name
_PASSWORD = re.compile(r"[A-Za-z0-9]{8,64}")


class RouterMetadataServicer(metadata_pb2_grpc.RouterMetadataServicer):
    def __init__(self, registry: RouterRegistry) -> None:
        self.registry = registry

    def SetGuestPassword(self, request: pb.SetGuestPasswordRequest,
                         context: Any) -> pb.SetGuestPasswordResponse:
        try:
            validate.check_id("port", request.port_id)
        except ConfigError as e:
            raise RequestError(str(e)) from None
        if not _PASSWORD.fullmatch(request.password):
            raise RequestError("password: 8 to 64 letters and digits")
        rt = self.registry.runtime(request.router_id, create=False)
        rt.set_guest_password(request.port_id, request.password)
        return pb.SetGuestPasswordResponse()


def add_to_server(registry: RouterRegistry, server: grpc.Server) -> str:
    """Registers the service; returns its full name (for reflection)."""
    metadata_pb2_grpc.add_RouterMetadataServicer_to_server(RouterMetadataServicer(registry),
                                                           server)
    return SERVICE_NAME
