"""``cloudnet host list`` against the real server: a router host registered
and heartbeating is UP with its routers; a compute host is UNKNOWN; a
tenant token is refused; the registry refuses a bad host name by field."""

from __future__ import annotations

import grpc
import pytest
from cloudnet.netmgr.v1 import hosts_pb2 as hpb
from cloudnet.netmgr.v1 import hosts_pb2_grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc
from cloudnet.router.v1 import registration_pb2 as rpb
from cloudnet.router.v1 import registration_pb2_grpc

from tests.lib.cli_runner import Cli
from tests.lib.netmgr_cloud import bad_fields


def test_host_list_shows_state_heartbeat_and_routers(server: str, c: Cli) -> None:
    md = (("authorization", f"Bearer {c.admin}"),)
    with grpc.insecure_channel(server) as ch:
        reg = registration_pb2_grpc.RouterHostRegistryStub(ch)
        reg.RegisterRouterHost(rpb.RegisterRouterHostRequest(
            name="rhost1", address="10.0.0.5:7080", fabric="linuxbridge", vcpus=2,
            memory_mib=2048), metadata=md, timeout=10)
        assert reg.RouterHostHeartbeat(rpb.RouterHostHeartbeatRequest(name="rhost1"),
                                       metadata=md, timeout=10).routers == 0
        hosts_pb2_grpc.HostServiceStub(ch).RegisterHost(hpb.RegisterHostRequest(host=hpb.Host(
            name="compute1", address="10.0.0.6:7171", fabric="ovs", vcpus=4,
            memory_mib=4096)), metadata=md, timeout=10)
        tenants = rpc.TenantServiceStub(ch)
        tenant = tenants.CreateTenant(pb.CreateTenantRequest(name="t"), metadata=md)
        secret = tenants.CreateToken(pb.CreateTokenRequest(tenant_id=tenant.id, name="t"),
                                     metadata=md).secret
        rpc.NetworkServiceStub(ch).CreateNetwork(pb.CreateNetworkRequest(
            network=pb.Network(name="n", cidr="10.1.0.0/24")),
            metadata=(("authorization", f"Bearer {secret}"),), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            reg.RegisterRouterHost(rpb.RegisterRouterHostRequest(
                name="Bad Name", address="x:1", fabric="linuxbridge", vcpus=1, memory_mib=1),
                metadata=md, timeout=10)
        assert bad_fields(e.value) == ["host.name"]
        with pytest.raises(grpc.RpcError) as e:
            reg.RouterHostHeartbeat(rpb.RouterHostHeartbeatRequest(name="rhost1"),
                                    metadata=(("authorization", f"Bearer {secret}"),))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

    rc, out, _ = c.run(c.admin, "host", "list")
    assert rc == 0, out
    header, *lines = out.splitlines()
    assert header.split() == ["ROLE", "NAME", "STATE", "LAST_HEARTBEAT", "ROUTERS", "ADDRESS"]
    rows = {line.split()[1]: line.split() for line in lines}
    assert rows["rhost1"][0] == "router"
    assert rows["rhost1"][2] == "UP"
    assert rows["rhost1"][3].startswith("20")  # a timestamp
    assert rows["rhost1"][4] == "1"  # the network's router was placed there
    assert rows["compute1"][:3] == ["compute", "compute1", "UNKNOWN"]
    assert rows["compute1"][3] == "-"
