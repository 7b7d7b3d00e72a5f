"""The all-in-one cloud's test side: tenants with their own token, networks,
ports and namespace guests; a cloud whose routers are appliance VMs (netmgr's
VM backend), started and checked clean after; free loopback ports.

The fixtures that start a cloud per test module: tests/fixtures/allinone.py.
"""
from __future__ import annotations

import contextlib
import os
import socket
import uuid
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpcpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vpcrpc

from aio import vm_backend
from aio.allinone import AllInOne
from aio.demo import Api
from aio.nsguest import NamespaceGuest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tenant:
    """A tenant with its own token, and helpers to build networks and guests."""

    def __init__(self, cloud: AllInOne, name: str) -> None:
        self.cloud = cloud
        self.admin = Api(cloud.listen, cloud.admin_token, tls=cloud.client_tls)
        self.tenant = self.admin.call(self.admin.tenants.CreateTenant,
                                      pb.CreateTenantRequest(name=name))
        self.secret = self.admin.call(self.admin.tenants.CreateToken, pb.CreateTokenRequest(
            tenant_id=self.tenant.id, name="t")).secret
        self.api = Api(cloud.listen, self.secret, tls=cloud.client_tls)
        self.guests: list[NamespaceGuest] = []

    def network(self, **fields: Any) -> pb.Network:
        return self.api.call(self.api.networks.CreateNetwork,
                             pb.CreateNetworkRequest(network=pb.Network(**fields)))

    def port(self, network_id: str, **fields: Any) -> pb.Port:
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


def router_image_built() -> bool:
    return all(os.path.exists(os.path.join(vm_backend.ROUTER_IMAGE_DIR, f))
               for f in ("manifest.json", "vmlinuz", "initrd.img", "disk.qcow2"))


def vm_cloud_up(tmp_path_factory: pytest.TempPathFactory, *, fault_channel: bool = False,
                **settings: object) -> AllInOne:
    if not router_image_built():
        pytest.skip(f"router image not built (bash images/router/build.sh): "
                    f"{vm_backend.ROUTER_IMAGE_DIR}")
    prefix = f"v{uuid.uuid4().hex[:6]}"
    aio = AllInOne(insecure=True, prefix=prefix, state_dir=str(tmp_path_factory.mktemp("vmcloud")),
                   listen=f"127.0.0.1:{free_port()}", health_interval=1.0,
                   router_backend="vm", compute_listen=f"127.0.0.1:{free_port()}",
                   router_vm_settings=tuple(f"{k}={v}" for k, v in settings.items()),
                   fault_channel=fault_channel)
    return aio


def vm_cloud_down(aio: AllInOne) -> None:
    aio.down()
    leftovers = [n for n in os.listdir("/run/netns") if n.startswith(aio.prefix)]
    assert not leftovers, f"namespaces left behind: {leftovers}"
    from compute import libvirt_driver as lv

    left = list(lv.Driver(f"cn-{vm_backend.host_name(aio.prefix)}-").domains())
    assert not left, f"domains left behind: {left}"
