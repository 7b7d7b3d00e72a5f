"""The channel factory against real servers: a dead first address, a server
stopped under a client (reads move on to the next, by gRPC's own policy and
retries), round_robin over two listeners, address parsing."""

from __future__ import annotations

import socket
from concurrent import futures

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc

from common.channels import AddressError, grpc_target, make_channel
from netmgr.cli.client import API_SERVICES, Client
from netmgr.server import ServerConfig, create_server
from tests.lib.netmgr_cloud import ADMIN, Cloud, RecordingHooks


def dead_address() -> str:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def second_listener(cloud: Cloud) -> tuple[grpc.Server, str]:
    """Another server on the same store (one process, one database: two
    listeners, as two replicas would look to a client)."""
    config = ServerConfig(listen="127.0.0.1:0", db_url=cloud.db_url, admin_token=ADMIN)
    server, port = create_server(config, store=cloud.store, hooks=cloud.hooks)
    server.start()
    return server, f"127.0.0.1:{port}"


def test_targets() -> None:
    assert grpc_target("127.0.0.1:7070") == "ipv4:127.0.0.1:7070"
    assert grpc_target("10.0.0.1:1, 10.0.0.2:2") == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert grpc_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert grpc_target("netmgr.example:7070") == "dns:///netmgr.example:7070"
    assert grpc_target("unix:///run/x.sock") == "unix:///run/x.sock"
    for bad in ("", "a:1,b:2", "10.0.0.1", "10.0.0.1:x", "10.0.0.1:1,[::1]:2"):
        with pytest.raises(AddressError):
            grpc_target(bad)


def test_a_dead_first_address_is_skipped(cloud: Cloud) -> None:
    with Client(f"{dead_address()},{cloud.target}", ADMIN) as c:
        assert c.tenants.WhoAmI(pb.WhoAmIRequest()).admin
    # A DNS name: gRPC's resolver (localhost's records).
    with Client(f"localhost:{cloud.target.rsplit(':', 1)[1]}", ADMIN) as c:
        assert c.tenants.WhoAmI(pb.WhoAmIRequest()).admin


def test_reads_move_on_when_the_server_in_use_dies(cloud: Cloud) -> None:
    first, first_addr = second_listener(cloud)
    try:
        with Client(f"{first_addr},{cloud.target}", ADMIN) as c:
            c.tenants.CreateTenant(pb.CreateTenantRequest(name="acme"))  # on the first
            first.stop(None).wait()
            # The channel was on the first listener: the read is retried on
            # the next address (the retry policy), never seen as UNAVAILABLE.
            for _ in range(5):
                names = [t.name for t in c.tenants.ListTenants(pb.ListTenantsRequest()).tenants]
                assert names == ["acme"]
    finally:
        first.stop(None)


def test_round_robin_uses_every_listener(cloud: Cloud) -> None:
    # Each listener tells its own hooks of the routers it changed.
    other_hooks = RecordingHooks()
    config = ServerConfig(listen="127.0.0.1:0", db_url=cloud.db_url, admin_token=ADMIN)
    other, port = create_server(config, store=cloud.store, hooks=other_hooks)
    other.start()
    tenant, _ = cloud.new_tenant("acme")
    try:
        channel = make_channel(f"{cloud.target},127.0.0.1:{port}", tls=None,
                               policy="round_robin", retry_services=API_SERVICES)
        with Client("", ADMIN, tenant=tenant.id, channel=channel) as c:
            for n in range(8):
                c.networks.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
                    name=f"n{n}", cidr=f"10.{n}.0.0/24")))
        channel.close()
    finally:
        other.stop(None)
    assert cloud.hooks.notified
    assert other_hooks.notified
    assert len(cloud.hooks.notified) + len(other_hooks.notified) == 8


class FlakyTenants(rpc.TenantServiceServicer):
    """Answers each method's first call UNAVAILABLE (a replica going away)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _flaky(self, name: str, context: grpc.ServicerContext) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "going away")

    def ListTenants(self, request: pb.ListTenantsRequest,
                    context: grpc.ServicerContext) -> pb.ListTenantsResponse:
        self._flaky("ListTenants", context)
        return pb.ListTenantsResponse(tenants=[pb.Tenant(name="acme")])

    def CreateTenant(self, request: pb.CreateTenantRequest,
                     context: grpc.ServicerContext) -> pb.Tenant:
        self._flaky("CreateTenant", context)
        return pb.Tenant(name=request.name)


def test_reads_are_retried_and_creates_are_not() -> None:
    flaky = FlakyTenants()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc.add_TenantServiceServicer_to_server(flaky, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", ADMIN) as c:
            assert [t.name for t in c.tenants.ListTenants(pb.ListTenantsRequest()).tenants] \
                == ["acme"]
            with pytest.raises(grpc.RpcError) as info:
                c.tenants.CreateTenant(pb.CreateTenantRequest(name="x"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert flaky.calls == {"ListTenants": 2, "CreateTenant": 1}
    finally:
        server.stop(None)
