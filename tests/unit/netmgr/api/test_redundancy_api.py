"""Redundant routers through netmgr's API: two instances on two hosts, each
with its role, host and priority; a failover on purpose; bad input refused
before anything changes; the two configs the agents get."""

from __future__ import annotations

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import redundancy_pb2 as rpb
from cloudnet.netmgr.v1 import redundancy_pb2_grpc as rrpc
from cloudnet.router.v1 import agent_pb2 as apb
from google.protobuf.field_mask_pb2 import FieldMask

from netmgr.reconcile.configbuild.redundancy import instance_config
from netmgr.reconcile.configbuild.router import build_router_config
from router.runtime import verify
from router.services.registry import router_services
from tests.lib.netmgr_cloud import Api, Cloud, rpc_error
from tests.lib.routerconfigs import HOST

TWO_HOSTS = ("host-b", "local")


def redundancy(cloud: Cloud, api: Api) -> rrpc.RouterRedundancyServiceStub:
    stub = rrpc.RouterRedundancyServiceStub(cloud.channel)

    class Bound:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            method = getattr(stub, name)
            return lambda req: method(req, metadata=api.metadata, timeout=30)

    return Bound()  # type: ignore[return-value]


def network(api: Api, name: str, cidr: str, redundant: bool = False) -> pb.Network:
    return api.CreateNetwork(pb.CreateNetworkRequest(
        network=pb.Network(name=name, cidr=cidr, redundant=redundant)))


def test_redundant_with_one_host_is_refused_and_nothing_is_created(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    before = cloud.row_counts()
    err = rpc_error(lambda: network(api, "web", "10.0.0.0/24", redundant=True))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "one router host (local)" in err.details()
    assert "two instances need two hosts" in err.details()
    assert cloud.row_counts() == before
    # Switching an existing network: the same answer, and it stays single.
    web = network(api, "web", "10.0.0.0/24")
    err = rpc_error(lambda: redundancy(cloud, api).SetRedundancy(
        rpb.SetRedundancyRequest(network_id=web.id, redundant=True)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not api.GetNetwork(pb.GetNetworkRequest(id=web.id)).redundant


def test_a_redundant_network_has_two_instances_on_two_hosts(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    cloud.store.redundancy.hosts = TWO_HOSTS
    web = network(api, "web", "10.0.0.0/24", redundant=True)
    assert web.redundant
    router = api.GetRouter(pb.GetRouterRequest(id=web.router_id))
    assert [(i.instance, i.host, i.priority, i.role) for i in router.instances] == [
        (0, "local", 200, ""), (1, "host-b", 100, "")]
    assert router.desired_generation == 2  # made redundant after its creation
    # Its sync VLAN is the zone's, never a network's.
    nxt = network(api, "db", "10.1.0.0/24")
    red = cloud.store.redundancy.get(web.router_id)
    assert red is not None
    assert red.sync_vlan not in (web.vlan_id, nxt.vlan_id)
    assert not api.GetNetwork(pb.GetNetworkRequest(id=nxt.id)).redundant


def test_failover_moves_the_preference_and_is_refused_for_a_single_router(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    cloud.store.redundancy.hosts = TWO_HOSTS
    single = network(api, "single", "10.2.0.0/24")
    err = rpc_error(lambda: redundancy(cloud, api).Failover(
        rpb.FailoverRequest(network_id=single.id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is not redundant" in err.details()
    web = network(api, "web", "10.0.0.0/24", redundant=True)
    gen = api.GetRouter(pb.GetRouterRequest(id=web.router_id)).desired_generation
    out = redundancy(cloud, api).Failover(rpb.FailoverRequest(network_id=web.id))
    assert [(i.host, i.priority) for i in out.instances] == [("local", 100), ("host-b", 200)]
    assert "failover requested: instance 1 (host-b)" in out.events[-1]
    assert api.GetRouter(pb.GetRouterRequest(id=web.router_id)).desired_generation == gen + 1
    assert cloud.hooks.notified[-1] == web.router_id


def test_switched_either_way_with_an_update(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    cloud.store.redundancy.hosts = TWO_HOSTS
    web = network(api, "web", "10.0.0.0/24")

    def update(redundant: bool, *paths: str, **fields: object) -> pb.Network:
        return api.UpdateNetwork(pb.UpdateNetworkRequest(
            network=pb.Network(id=web.id, redundant=redundant, **fields),  # type: ignore[arg-type]
            update_mask=FieldMask(paths=list(paths))))

    assert update(True, "redundant").redundant
    assert len(api.GetRouter(pb.GetRouterRequest(id=web.router_id)).instances) == 2
    changed = update(True, "redundant", "name", name="web2")
    assert (changed.redundant, changed.name) == (True, "web2")
    assert not update(False, "redundant").redundant
    assert api.GetRouter(pb.GetRouterRequest(id=web.router_id)).instances == []


def test_bad_input(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    cloud.store.redundancy.hosts = TWO_HOSTS
    stub = redundancy(cloud, api)
    err = rpc_error(lambda: stub.SetRedundancy(rpb.SetRedundancyRequest(redundant=True)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = rpc_error(lambda: stub.SetRedundancy(
        rpb.SetRedundancyRequest(network_id="not-a-uuid", redundant=True)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = rpc_error(lambda: stub.Failover(rpb.FailoverRequest(
        network_id="00000000-0000-4000-8000-000000000000")))
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("instance", [0, 1])
def test_each_instance_gets_a_config_the_agent_accepts(
        cloud: Cloud, acme: tuple[pb.Tenant, Api], instance: int) -> None:
    _, api = acme
    cloud.store.redundancy.hosts = TWO_HOSTS
    web = network(api, "web", "10.0.0.0/24", redundant=True)
    red = cloud.store.redundancy.get(web.router_id)
    assert red is not None
    single = build_router_config(cloud.store.router_snapshot(web.router_id))
    cfg = instance_config(single, red, instance)
    verify(cfg, router_services(HOST))
    sync = [i for i in cfg.interfaces if i.role == apb.INTERFACE_ROLE_SYNC]
    assert [(i.segment_id, list(i.addresses)) for i in sync] == [
        (red.sync_vlan, [f"169.254.0.{instance + 1}/30"])]
    assert cfg.redundancy.priority == (200 if instance == 0 else 100)
    macs = {i.name: i.mac for i in cfg.interfaces if i.role != apb.INTERFACE_ROLE_SYNC}
    # Instance 0 keeps the router's MACs; instance 1 has its own.
    assert (macs == {i.name: i.mac for i in single.interfaces}) == (instance == 0)


def test_the_vm_backend_refuses_a_redundant_network_or_vpc_with_one_compute_host(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    from cloudnet.netmgr.v1 import vpc_pb2 as vpb
    from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc

    from netmgr.model.core import RouterBackend

    _, api = acme
    cloud.store.redundancy.hosts = TWO_HOSTS  # router agents do not count for VMs
    cloud.store.redundancy.compute_hosts = lambda: ["c1"]
    cloud.store.default_backend = RouterBackend.VM
    before = cloud.row_counts()
    err = rpc_error(lambda: network(api, "web", "10.0.0.0/24", redundant=True))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        "network.redundant: the zone has 1 live compute host(s) (c1); the two router VMs of "
        "a redundant router need two compute hosts")
    vpcs = vrpc.VpcServiceStub(cloud.channel)
    err = rpc_error(lambda: vpcs.CreateVpc(vpb.CreateVpcRequest(vpc=vpb.Vpc(
        name="shop", cidr="10.40.0.0/16", redundant=True)), metadata=api.metadata, timeout=30))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details().startswith("vpc.redundant: the zone has 1 live compute host(s)")
    assert cloud.row_counts() == before
    # An existing VM router cannot be switched either.
    web = network(api, "web", "10.0.0.0/24")
    err = rpc_error(lambda: redundancy(cloud, api).SetRedundancy(
        rpb.SetRedundancyRequest(network_id=web.id, redundant=True)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "two router VMs of a redundant router need two compute hosts" in err.details()
    assert cloud.store.redundancy.get(web.router_id) is None


def test_the_vm_backend_makes_a_network_redundant_on_two_compute_hosts(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    from netmgr.model.core import RouterBackend

    _, api = acme
    cloud.store.redundancy.compute_hosts = lambda: ["c1", "c2"]
    cloud.store.default_backend = RouterBackend.VM
    web = network(api, "web", "10.0.0.0/24", redundant=True)
    red = cloud.store.redundancy.get(web.router_id)
    assert red is not None
    # Instance 1 goes to a compute host other than the router's own.
    assert red.hosts[1] in ("c1", "c2")
    assert red.hosts[1] != red.hosts[0]


def test_a_router_listing_reads_the_redundancy_of_its_page_at_once(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    """A page of routers is one redundancy read, however many routers it
    holds (a dashboard or the bench lists 1,000 routers every few seconds),
    and each router still gets its own instances."""
    from sqlalchemy import event

    _, api = acme
    cloud.store.redundancy.hosts = TWO_HOSTS
    nets = [network(api, f"n{i}", f"10.{i}.0.0/24", redundant=i % 3 == 0) for i in range(7)]
    reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM router_redundancy" in statement:
            reads.append(statement)

    event.listen(cloud.store.db._engine, "before_cursor_execute", count)
    try:
        listed = api.ListRouters(pb.ListRoutersRequest(page_size=500)).routers
    finally:
        event.remove(cloud.store.db._engine, "before_cursor_execute", count)
    by_id = {r.id: r for r in listed}
    for i, net in enumerate(nets):
        hosts = [inst.host for inst in by_id[net.router_id].instances]
        assert hosts == (["local", "host-b"] if i % 3 == 0 else []), net.name
    assert len(reads) == 1
