"""From the API to the packet: two tenants' guests on a shared network, their
ports bound to one compute host; netmgr's pusher sends the host's filters to
the compute agent's PortFilterService, which enforces them with nftables on
the Linux-bridge fabric. Real guests (namespaces), real clients (busybox
ping, socat): default-group isolation between the tenants, then a group
rule and a port joining the remote group, each made through the API."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import security_group_pb2 as sgpb
from google.protobuf.field_mask_pb2 import FieldMask

from common.fabric.linuxbridge import LinuxBridgeFabric
from common.fabric.port_firewall import PortFirewall
from common.grpc_errors import ErrorMappingInterceptor
from common.netns import ensure_netns, remove_netns
from compute.agent import port_filters
from netmgr.model.hosts import HostSpec
from netmgr.reconcile.port_filters import PortFilterPusher
from tests.lib.guest_servers import UDP, ask, in_ns
from tests.lib.netmgr_cloud import ADMIN, Cloud

pytestmark = pytest.mark.integration

PFX = f"sn{os.getpid() % 100000}"


def eventually(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def ping(ns: str, ip: str) -> bool:
    return in_ns(ns, ["busybox", "ping", "-c", "1", "-W", "1", ip]).returncode == 0


@pytest.fixture
def host() -> Iterator[tuple[str, LinuxBridgeFabric, dict[str, str]]]:
    """A compute host's fabric and its PortFilterService on a loopback port."""
    fabric = LinuxBridgeFabric(f"{PFX}-fab")
    fabric.setup()
    devices: dict[str, str] = {}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[ErrorMappingInterceptor()])
    admin = f"Bearer {ADMIN}"
    port_filters.add_to_server(port_filters.PortFilterServicer(
        PortFirewall(fabric.netns), lambda: dict(devices),
        lambda ctx: dict(ctx.invocation_metadata()).get("authorization") == admin), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", fabric, devices
    finally:
        server.stop(None)
        fabric.teardown()


def test_two_tenants_on_a_shared_network_from_the_api_to_the_packet(
    netmgr_cloud: Cloud, host: tuple[str, LinuxBridgeFabric, dict[str, str]]
) -> None:
    cloud = netmgr_cloud
    address, fabric, devices = host
    cloud.store.hosts.register(HostSpec("h1", address, "linuxbridge", 2, 1024))
    provider, _ = cloud.new_tenant("provider")
    _, acme = cloud.new_tenant("acme")
    _, globex = cloud.new_tenant("globex")
    net = cloud.api(tenant=provider.id).CreateNetwork(pb.CreateNetworkRequest(
        network=pb.Network(name="basic", cidr="172.20.0.0/24", shared=True,
                           provider_vlan=3000)))
    ports = {}
    for name, api in (("a1", acme), ("a2", acme), ("g1", globex)):
        ports[name] = api.CreatePort(pb.CreatePortRequest(port=pb.Port(
            network_id=net.id, name=name, binding_host="h1")))
    made = []
    pusher = PortFilterPusher(cloud.store, ADMIN)
    try:
        for name, p in ports.items():
            ns = f"{PFX}-{name}"
            ensure_netns(ns)
            made.append(ns)
            fabric.plug(f"{PFX}-{name}", net.vlan_id, ns, "eth0", p.mac)
            in_ns(ns, ["ip", "addr", "add", f"{p.ip}/24", "dev", "eth0"])
            devices[p.id] = f"{PFX}-{name}"
        pusher.push_all()
        assert pusher.last_errors == {}
        a1, a2, g1 = (f"{PFX}-{n}" for n in ("a1", "a2", "g1"))
        assert eventually(lambda: ping(a1, ports["a2"].ip)), "acme's default group"
        assert not ping(a1, ports["g1"].ip), "globex's guest is not in acme's default group"
        assert not ping(g1, ports["a2"].ip)

        # acme opens udp/7000 on its default group's ports to members of its
        # group "clients"; another tenant cannot put its port in that group.
        def group(name: str) -> sgpb.SecurityGroup:
            made = acme.CreateSecurityGroup(sgpb.CreateSecurityGroupRequest(
                security_group=sgpb.SecurityGroup(name=name)))
            acme.CreateSecurityGroupRule(sgpb.CreateSecurityGroupRuleRequest(
                rule=sgpb.SecurityGroupRule(security_group_id=made.id, direction="egress")))
            return made

        clients, lonely = group("clients"), group("lonely")
        default = next(g for g in acme.ListSecurityGroups(
            sgpb.ListSecurityGroupsRequest()).security_groups if g.name == "default")
        acme.CreateSecurityGroupRule(sgpb.CreateSecurityGroupRuleRequest(
            rule=sgpb.SecurityGroupRule(security_group_id=default.id, direction="ingress",
                                        protocol="udp", port_min=7000,
                                        remote_group_id=clients.id)))
        with pytest.raises(grpc.RpcError) as info:
            globex.UpdatePort(pb.UpdatePortRequest(
                port=pb.Port(id=ports["g1"].id, security_group_ids=[clients.id]),
                update_mask=FieldMask(paths=["security_group_ids"])))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        def move_a1(group_id: str) -> None:
            acme.UpdatePort(pb.UpdatePortRequest(
                port=pb.Port(id=ports["a1"].id, security_group_ids=[group_id]),
                update_mask=FieldMask(paths=["security_group_ids"])))
            pusher.push_all()

        proc = subprocess.Popen(["ip", "netns", "exec", a2, "socat",
                                 "UDP-RECVFROM:7000,fork,reuseaddr", "SYSTEM:read line; echo a2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            move_a1(lonely.id)
            assert ask(a1, UDP, ports["a2"].ip, 7000, timeout=2) == "", "not in clients"
            move_a1(clients.id)
            assert eventually(lambda: ask(a1, UDP, ports["a2"].ip, 7000, timeout=1) == "a2"), \
                "joined clients"
            assert ask(g1, UDP, ports["a2"].ip, 7000, timeout=2) == ""
            move_a1(lonely.id)
            assert ask(a1, UDP, ports["a2"].ip, 7000, timeout=2) == "", "left clients"
        finally:
            proc.kill()
            proc.wait()
    finally:
        pusher.stop()
        for ns in made:
            remove_netns(ns)
