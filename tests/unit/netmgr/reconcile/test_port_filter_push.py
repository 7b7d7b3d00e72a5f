"""netmgr's push of a host's port filters reaches that host's compute agent
(a real PortFilterService on a loopback port, its backend recording what it
is asked to enforce): ports mapped to their devices, unknown ports reported,
a non-admin caller refused, an older push ignored."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures

import grpc
import pytest
from cloudnet.compute.v1 import port_filters_pb2 as fpb
from cloudnet.compute.v1 import port_filters_pb2_grpc as frpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import routing_pb2 as rpb
from cloudnet.netmgr.v1 import security_group_pb2 as sgpb

from common.fabric.port_firewall import Port
from common.grpc_errors import ErrorMappingInterceptor
from compute.agent import port_filters
from netmgr.model.hosts import HostSpec
from netmgr.reconcile.configbuild.port_filters import build_port_filters
from netmgr.reconcile.port_filters import PortFilterPusher
from netmgr.reconcile.store_view import PortFilterStore
from netmgr.store.base import DEFAULT_ZONE
from tests.lib.netmgr_cloud import ADMIN, Cloud


class Recording:
    def __init__(self) -> None:
        self.applied: list[tuple[list[Port], dict[str, list[str]]]] = []

    def setup(self) -> None:
        pass

    def apply(self, ports: Sequence[Port], members: Mapping[str, Sequence[str]]) -> int:
        self.applied.append((list(ports), {k: list(v) for k, v in members.items()}))
        return 1


@pytest.fixture
def agent() -> Iterator[tuple[str, Recording, dict[str, str], port_filters.PortFilterServicer]]:
    backend = Recording()
    devices: dict[str, str] = {}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[ErrorMappingInterceptor()])
    admin_header = f"Bearer {ADMIN}"
    servicer = port_filters.PortFilterServicer(
        backend, lambda: dict(devices),
        lambda ctx: dict(ctx.invocation_metadata()).get("authorization") == admin_header)
    port_filters.add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", backend, devices, servicer
    server.stop(None)


def test_netmgr_pushes_a_hosts_filters_to_its_agent(
    cloud: Cloud,
    agent: tuple[str, Recording, dict[str, str], port_filters.PortFilterServicer],
) -> None:
    address, backend, devices, servicer = agent
    cloud.store.hosts.register(HostSpec("h1", address, "vxlan", 2, 1024))
    _, api = cloud.new_tenant("acme")
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="n",
                                                                       cidr="10.0.0.0/24")))
    web = api.CreateSecurityGroup(sgpb.CreateSecurityGroupRequest(
        security_group=sgpb.SecurityGroup(name="web")))
    api.CreateSecurityGroupRule(sgpb.CreateSecurityGroupRuleRequest(rule=sgpb.SecurityGroupRule(
        security_group_id=web.id, direction="ingress", protocol="tcp", port_min=443)))
    p1 = api.CreatePort(pb.CreatePortRequest(port=pb.Port(
        network_id=net.id, name="vm1", binding_host="h1", security_group_ids=[web.id])))
    p2 = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, name="vm2",
                                                          binding_host="h1")))
    devices[p1.id] = "vt-p1"
    # Annotated: mypy over the tests checks the store still meets the Protocol.
    store: PortFilterStore = cloud.store
    pusher = PortFilterPusher(store, ADMIN)
    try:
        pusher.push_all()
        assert pusher.last_errors == {}
        ports, _ = backend.applied[-1]
        assert [p.device for p in ports] == ["vt-p1"], "p2 has no NIC on this host yet"
        assert [(r.direction, r.protocol, r.port_min) for r in ports[0].rules] == [
            ("ingress", "tcp", 443)]
        assert (ports[0].mac, ports[0].ips) == (p1.mac, (p1.ip,))
        # p2's VM comes up: the agent applies the last push again at once.
        devices[p2.id] = "vt-p2"
        servicer.reapply()
        ports, members = backend.applied[-1]
        assert sorted(p.device for p in ports) == ["vt-p1", "vt-p2"]
        assert p2.ip in next(iter(members.values())), "p2 is in the default group"
    finally:
        pusher.stop()
    stub = frpc.PortFilterServiceStub(grpc.insecure_channel(address))
    with pytest.raises(grpc.RpcError) as info:
        stub.ApplyPortFilters(fpb.PortFilters(generation=1), metadata=[
            ("authorization", "Bearer not-the-admin")])
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    before = len(backend.applied)
    old = stub.ApplyPortFilters(fpb.PortFilters(generation=1), metadata=[
        ("authorization", f"Bearer {ADMIN}")])
    assert len(backend.applied) == before, "an older push is ignored"
    assert old.applied_generation > 1


def test_a_dual_stack_ports_filters_and_its_groups_hold_its_ipv6_address(
    make_cloud: Callable[..., Cloud],
) -> None:
    cloud = make_cloud(dataclasses.replace(DEFAULT_ZONE, ipv6_pool="2001:db8:100::/48"))
    cloud.store.hosts.register(HostSpec("h1", "127.0.0.1:1", "vxlan", 2, 1024))
    _, api = cloud.new_tenant("acme")
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="n", cidr="10.0.0.0/24", ipv6_mode=rpb.IPV6_MODE_SLAAC)))
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id,
                                                            binding_host="h1")))
    assert port.ipv6
    msg = build_port_filters(cloud.store.security_groups.host_filters("h1"), 1)
    assert list(msg.ports[0].ips) == [port.ip, port.ipv6]
    assert [list(g.addresses) for g in msg.groups] == [[port.ip, port.ipv6]]


class CountingStore:
    """Counts the passes (each looks the bound hosts up); no port is bound."""

    def __init__(self) -> None:
        self.lookups = 0
        self.security_groups = self
        self.hosts = self

    def bound_hosts(self) -> list[str]:
        self.lookups += 1
        return []


def test_a_burst_of_changes_is_one_look_up_of_the_bound_hosts() -> None:
    """Every API change wakes the pusher; a burst must not cost a database
    read each (ten changes right after a pass: one more pass, not ten)."""
    import time

    store = CountingStore()
    pusher = PortFilterPusher(store, ADMIN, spacing=1.0)  # type: ignore[arg-type]
    pusher.start()
    try:
        pusher.changed()
        deadline = time.monotonic() + 10
        while store.lookups < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for _ in range(10):  # well within the spacing
            pusher.changed()
        deadline = time.monotonic() + 10
        while store.lookups < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # nothing changed since: no third pass
        assert store.lookups == 2
    finally:
        pusher.stop()
