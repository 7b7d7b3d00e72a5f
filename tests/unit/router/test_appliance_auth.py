"""The router agent's bearer token (router/auth.py) and the appliance's boot identity
(router/appliance.py): no root needed."""

from __future__ import annotations

import os
import struct

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router import appliance, auth
from router.agent import Agent, create_server

TOKEN = "t0ken-for-router-abcdef0123456789"


@pytest.fixture
def server(tmp_path):
    agent = Agent(str(tmp_path / "state"), fabric=_NoFabric())
    srv, port = create_server("127.0.0.1:0", agent,
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


def _type11(strings: list[str]) -> bytes:
    header = struct.pack("<BBHB", 11, 5, 0x1100, len(strings))
    return header + b"".join(s.encode() + b"\0" for s in strings) + b"\0"


def test_oem_strings_give_the_identity(tmp_path):
    d = tmp_path / "11-0"
    d.mkdir()
    (d / "raw").write_bytes(_type11([
        "unrelated=1", "cloudnet.router_id=r1", "cloudnet.control_mac=52:54:00:AA:00:01",
        "cloudnet.control_address=10.250.0.2/24", "cloudnet.agent_port=50052",
        f"cloudnet.token={TOKEN}",
    ]))
    values = appliance.read_oem_strings(str(tmp_path / "11-*" / "raw"))
    assert values["router_id"] == "r1" and "unrelated" not in values
    ident, token = appliance.identity_from(values)
    assert token == TOKEN
    assert ident.control_mac == "52:54:00:aa:00:01"
    assert ident.listen == "10.250.0.2:50052"
    appliance.write_run_files(ident, token, str(tmp_path / "run"))
    assert os.stat(tmp_path / "run" / "token").st_mode & 0o777 == 0o600
    env = (tmp_path / "run" / "agent.env").read_text()
    assert "CLOUDNET_LISTEN=10.250.0.2:50052" in env
    assert appliance.control_mac_from(str(tmp_path / "run")) == "52:54:00:aa:00:01"


@pytest.mark.parametrize("drop,bad,match", [
    ("token", {}, "missing cloudnet.token"),
    ("", {"control_mac": "nope"}, "control NIC"),
    ("", {"control_gateway": "10.9.9.9"}, "not in"),
    ("", {"token": "short"}, "at least"),
])
def test_bad_identity_is_refused(drop, bad, match):
    values = {"router_id": "r1", "control_mac": "52:54:00:aa:00:01",
              "control_address": "10.250.0.2/24", "token": TOKEN}
    values.pop(drop, None)
    values.update(bad)
    with pytest.raises(ValueError, match=match):
        appliance.identity_from(values)


def test_appliance_agent_serves_its_router_only(tmp_path):
    agent = appliance.ApplianceAgent("r1", str(tmp_path))
    from router.agent import RequestError

    with pytest.raises(RequestError, match="serves router r1 only"):
        agent.runtime("r2")
    assert agent.runtime("r1").ctx.router_id == "r1"
