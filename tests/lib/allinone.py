"""An all-in-one cloud per test module: real agent and netmgr daemons.

Parametrised by router backend: every test runs against namespace routers
("netns") and appliance-VM routers ("vm": netmgr's VM backend, a compute
agent booting images/router under TCG; skipped when the image is not built).
Tests about a namespace router's insides carry @pytest.mark.netns_only.
With VM routers a tenant's networks are deleted when its test ends, so at
most a few router VMs run at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpcpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vpcrpc

from aio.allinone import AllInOne
from aio.demo import Api
from aio.nsguest import NamespaceGuest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["netns", "vm"])
def cloud(request, tmp_path_factory):
    if request.param == "vm":
        from tests.integration.vm.conftest import vm_cloud_down, vm_cloud_up

        aio = vm_cloud_up(tmp_path_factory)
        try:
            aio.up()
            yield aio
        finally:
            vm_cloud_down(aio)
        return
    prefix = f"t{uuid.uuid4().hex[:6]}"
    aio = AllInOne(prefix=prefix, state_dir=str(tmp_path_factory.mktemp("cloud")),
                   listen=f"127.0.0.1:{free_port()}", health_interval=1.0)
    try:
        aio.up()
        yield aio
    finally:
        aio.down()
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        assert not leftovers, f"namespaces left behind: {leftovers}"


@pytest.fixture(autouse=True)
def _backend_marks(request):
    """Skip @pytest.mark.netns_only tests on VM routers (and vm_only on namespaces)."""
    if "cloud" not in request.fixturenames:
        return
    backend = request.getfixturevalue("cloud").router_backend
    netns_only = request.node.get_closest_marker("netns_only")
    if backend == "vm" and netns_only:
        pytest.skip(netns_only.args[0] if netns_only.args
                    else "about a namespace router on this host (netns backend only)")
    if backend != "vm" and request.node.get_closest_marker("vm_only"):
        pytest.skip("needs the VM backend's compute agent (vm backend only)")


class Tenant:
    """A tenant with its own token, and helpers to build networks and guests."""

    def __init__(self, cloud: AllInOne, name: str) -> None:
        self.cloud = cloud
        self.admin = Api(cloud.listen, cloud.admin_token)
        self.tenant = self.admin.call(self.admin.tenants.CreateTenant,
                                      pb.CreateTenantRequest(name=name))
        self.secret = self.admin.call(self.admin.tenants.CreateToken, pb.CreateTokenRequest(
            tenant_id=self.tenant.id, name="t")).secret
        self.api = Api(cloud.listen, self.secret)
        self.guests: list[NamespaceGuest] = []

    def network(self, **fields) -> pb.Network:
        return self.api.call(self.api.networks.CreateNetwork,
                             pb.CreateNetworkRequest(network=pb.Network(**fields)))

    def port(self, network_id: str, **fields) -> pb.Port:
        return self.api.call(self.api.ports.CreatePort,
                             pb.CreatePortRequest(port=pb.Port(network_id=network_id, **fields)))

    def guest(self, net: pb.Network, port: pb.Port) -> NamespaceGuest:
        g = NamespaceGuest(f"{self.cloud.prefix}-g-{port.id[:8]}", self.cloud.fabric,
                           f"gp{port.id.replace('-', '')[:10]}")
        g.attach(net.vlan_id, port.mac)
        self.guests.append(g)
        return g

    def close(self) -> None:
        for g in self.guests:
            g.destroy()
        if self.cloud.router_backend == "vm":
            # Each network's (and VPC's) router is a VM: delete them now
            # (netmgr sweeps the VMs). A VPC goes once its tiers are gone.
            for n in self.api.call(self.api.networks.ListNetworks,
                                   pb.ListNetworksRequest()).networks:
                self.api.call(self.api.networks.DeleteNetwork,
                              pb.DeleteNetworkRequest(id=n.id, force=True))
            vpcs = vpcrpc.VpcServiceStub(self.api.channel)
            for v in self.api.call(vpcs.ListVpcs, vpcpb.ListVpcsRequest()).vpcs:
                with contextlib.suppress(grpc.RpcError):
                    self.api.call(vpcs.DeleteVpc, vpcpb.DeleteVpcRequest(id=v.id))
        self.api.close()
        self.admin.close()


@pytest.fixture
def make_tenant(cloud):
    made: list[Tenant] = []

    def make(name: str | None = None) -> Tenant:
        t = Tenant(cloud, name or f"t{uuid.uuid4().hex[:8]}")
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()
