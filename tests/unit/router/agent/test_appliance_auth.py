"""The router agent's bearer token (router/agent/auth.py) and appliance mode
(router/agent/appliance.py): no root needed."""

from __future__ import annotations

import os

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router.agent import appliance, auth
from router.agent.registry import RouterRegistry
from router.agent.server import create_server
from router.errors import RequestError

TOKEN = "t0ken-for-router-abcdef0123456789"


@pytest.fixture
def server(tmp_path):
    registry = RouterRegistry(str(tmp_path / "state"), fabric=_NoFabric())
    srv, port = create_server("127.0.0.1:0", registry,
                              interceptors=(auth.BearerTokenInterceptor(TOKEN),))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    srv.stop(0)


class _NoFabric:
    def setup(self) -> None: ...
    def plug(self, *a: object, **kw: object) -> None: ...
    def unplug(self, port: str) -> None: ...
    def ports(self) -> set[str]:
        return set()


def test_call_without_token_is_unauthenticated(server):
    stub = agent_pb2_grpc.RouterAgentStub(server)
    with pytest.raises(grpc.RpcError) as e:
        stub.ListRouterStatus(pb.ListRouterStatusRequest())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        stub.ListRouterStatus(pb.ListRouterStatusRequest(),
                              metadata=auth.metadata("x" * 16 + TOKEN))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:  # the scheme is part of the secret's form
        stub.ListRouterStatus(pb.ListRouterStatusRequest(), metadata=(("authorization", TOKEN),))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_call_with_token_passes_and_health_is_open(server):
    stub = agent_pb2_grpc.RouterAgentStub(server)
    resp = stub.ListRouterStatus(pb.ListRouterStatusRequest(), metadata=auth.metadata(TOKEN))
    assert list(resp.routers) == []
    health = health_pb2_grpc.HealthStub(server)
    assert health.Check(health_pb2.HealthCheckRequest()).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_the_token_too(server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(server)
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ServerReflectionInfo(iter([req])))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_token_file_must_be_private_and_long(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(auth.TokenError, match="0600"):
        auth.read_token_file(str(path))
    os.chmod(path, 0o600)
    assert auth.read_token_file(str(path)) == TOKEN
    path.write_text("short")
    with pytest.raises(auth.TokenError, match="at least"):
        auth.read_token_file(str(path))
    with pytest.raises(auth.TokenError):
        auth.read_token_file(str(tmp_path / "missing"))


def test_appliance_agent_serves_its_router_only(tmp_path):
    registry = appliance.appliance_registry("r1", str(tmp_path))
    with pytest.raises(RequestError, match="serves router r1 only"):
        registry.runtime("r2")
    rt = registry.runtime("r1")
    assert rt.ctx.router_id == "r1"
    assert isinstance(registry.fabric, appliance.ApplianceFabric)
    assert rt.ctx.fabric is registry.fabric
    assert registry.fabric.router_netns == rt.ctx.netns
    assert not registry.probe_ports


def test_an_appliance_plugs_no_probe_port(tmp_path):
    from router.agent.diag_service import DiagnosticsServicer
    from router.diag import probes
    from router.diag.common import DiagUnavailable

    registry = appliance.appliance_registry("r1", str(tmp_path))
    port = probes.ProbePort(registry.fabric, "cn", 100, "02:00:00:00:00:99")
    with pytest.raises(DiagUnavailable, match="no switch inside"):
        DiagnosticsServicer(registry)._probe_port(port)
