"""Fixtures of the CLI tests: the real netmgr API server in-process (SQLite
store) with a ``cloudnet`` runner on it, an in-process fake netmgr (for CLI
behaviour that does not depend on the real server: metadata, pagination,
waiting, error details) and a free-port helper."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from netmgr.server import ServerConfig, create_server
from tests.lib.cli_runner import Cli

ADMIN = "admin-secret"
TENANT_TOKEN = "tenant-secret"
SERVER_ADMIN = "e2e-admin-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The real netmgr API server (SQLite store), in-process: its address."""
    config = ServerConfig(listen="127.0.0.1:0", db_url=f"sqlite:///{tmp_path}/db.sqlite",
                          admin_token=SERVER_ADMIN)
    grpc_server, port = create_server(config)
    grpc_server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        grpc_server.stop(None)


@pytest.fixture
def c(server: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cloudnet`` against :func:`server` (``c.admin`` is its admin token)."""
    return Cli(server, capsys, admin=SERVER_ADMIN)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No CLOUDNET_* from the developer's shell, and no real ~/.config token."""
    for var in ("CLOUDNET_SERVER", "CLOUDNET_TOKEN", "CLOUDNET_TOKEN_FILE", "CLOUDNET_TENANT",
                "CLOUDNET_CONFIG", "CLOUDNET_CA_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDNET_INSECURE", "1")  # these tests' servers are plaintext
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def unused_addr() -> str:
    """An address nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def abort_invalid(context: grpc.ServicerContext, field_name: str, reason: str) -> None:
    br = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field_name, description=reason)
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(br)
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=f"{field_name}: {reason}", details=[detail]
    )
    context.abort_with_status(rpc_status.to_status(status))


@dataclass
class Fake:
    """State and request log of the fake server."""

    admin: str = ADMIN
    tenant_token: str = TENANT_TOKEN

    calls: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    networks: dict[str, Any] = field(default_factory=dict)
    ports: dict[str, Any] = field(default_factory=dict)
    routers: dict[str, Any] = field(default_factory=dict)
    port_polls_to_active: int = 2
    page_size: int = 2

    def record(self, name: str, request: Any, context: grpc.ServicerContext) -> dict[str, str]:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.calls.append((name, request, md))
        if md.get("authorization") not in (f"Bearer {ADMIN}", f"Bearer {TENANT_TOKEN}"):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: invalid token")
        return md

    def requests(self, name: str) -> list[Any]:
        return [r for n, r, _ in self.calls if n == name]

    def page(self, items: list[Any], request: Any) -> tuple[list[Any], str]:
        start = int(request.page_token or 0)
        size = request.page_size or self.page_size
        size = min(size, self.page_size)
        end = start + size
        return items[start:end], (str(end) if end < len(items) else "")


class _Tenants(rpc.TenantServiceServicer):
    def __init__(self, fake: Fake) -> None:
        self.fake = fake

    def WhoAmI(self, request: Any, context: Any) -> Any:
        md = self.fake.record("WhoAmI", request, context)
        if md["authorization"] == f"Bearer {ADMIN}":
            return pb.WhoAmIResponse(admin=True)
        return pb.WhoAmIResponse(tenant_id="t-1", token_id="tok-1")


class _Zones(rpc.ZoneServiceServicer):
    def __init__(self, fake: Fake) -> None:
        self.fake = fake

    def UpdateZone(self, request: Any, context: Any) -> Any:
        self.fake.record("UpdateZone", request, context)
        return request.zone


class _Networks(rpc.NetworkServiceServicer):
    def __init__(self, fake: Fake) -> None:
        self.fake = fake

    def CreateNetwork(self, request: Any, context: Any) -> Any:
        self.fake.record("CreateNetwork", request, context)
        net = pb.Network()
        net.CopyFrom(request.network)
        if net.cidr.endswith("/33"):
            abort_invalid(context, "network.cidr", "prefix length must be 16 to 29")
        n = len(self.fake.networks) + 1
        net.id, net.router_id, net.vlan_id = f"net-{n}", f"r-{n}", 100 + n
        net.create_time.FromSeconds(1_700_000_000)
        self.fake.networks[net.id] = net
        self.fake.routers[net.router_id] = pb.Router(
            id=net.router_id,
            network_id=net.id,
            state=pb.ROUTER_STATE_PROVISIONING,
            desired_generation=3,
            applied_generation=0,
        )
        return net

    def GetNetwork(self, request: Any, context: Any) -> Any:
        self.fake.record("GetNetwork", request, context)
        if request.id not in self.fake.networks:
            context.abort(grpc.StatusCode.NOT_FOUND, f"id: network {request.id} not found")
        return self.fake.networks[request.id]

    def ListNetworks(self, request: Any, context: Any) -> Any:
        self.fake.record("ListNetworks", request, context)
        items, token = self.fake.page(list(self.fake.networks.values()), request)
        return pb.ListNetworksResponse(networks=items, next_page_token=token)

    def UpdateNetwork(self, request: Any, context: Any) -> Any:
        self.fake.record("UpdateNetwork", request, context)
        return request.network


class _Ports(rpc.PortServiceServicer):
    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.polls: dict[str, int] = {}

    def CreatePort(self, request: Any, context: Any) -> Any:
        self.fake.record("CreatePort", request, context)
        port = pb.Port()
        port.CopyFrom(request.port)
        port.id = f"p-{len(self.fake.ports) + 1}"
        port.state = pb.OBJECT_STATE_PENDING
        self.fake.ports[port.id] = port
        return port

    def GetPort(self, request: Any, context: Any) -> Any:
        self.fake.record("GetPort", request, context)
        port = self.fake.ports[request.id]
        self.polls[port.id] = self.polls.get(port.id, 0) + 1
        if self.polls[port.id] >= self.fake.port_polls_to_active:
            port.state = pb.OBJECT_STATE_ACTIVE
        return port

    def ListPorts(self, request: Any, context: Any) -> Any:
        self.fake.record("ListPorts", request, context)
        items = [
            p
            for p in self.fake.ports.values()
            if not request.network_id or p.network_id == request.network_id
        ]
        items, token = self.fake.page(items, request)
        return pb.ListPortsResponse(ports=items, next_page_token=token)


class _Routers(rpc.RouterServiceServicer):
    def __init__(self, fake: Fake) -> None:
        self.fake = fake

    def GetRouter(self, request: Any, context: Any) -> Any:
        self.fake.record("GetRouter", request, context)
        r = self.fake.routers[request.id]
        if r.applied_generation < r.desired_generation:
            r.applied_generation += 1
        if r.applied_generation >= r.desired_generation:
            r.state = pb.ROUTER_STATE_ACTIVE
        return r

    def RestartRouter(self, request: Any, context: Any) -> Any:
        self.fake.record("RestartRouter", request, context)
        r = self.fake.routers[request.id]
        r.desired_generation += 1
        r.state = pb.ROUTER_STATE_PROVISIONING
        return r


@pytest.fixture
def fake_server() -> Iterator[tuple[str, Fake]]:
    fake = Fake()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_TenantServiceServicer_to_server(_Tenants(fake), server)
    rpc.add_ZoneServiceServicer_to_server(_Zones(fake), server)
    rpc.add_NetworkServiceServicer_to_server(_Networks(fake), server)
    rpc.add_PortServiceServicer_to_server(_Ports(fake), server)
    rpc.add_RouterServiceServicer_to_server(_Routers(fake), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", fake
    finally:
        server.stop(None)
