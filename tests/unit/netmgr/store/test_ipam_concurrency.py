"""IPAM under parallel clients: no duplicate IP, MAC or VLAN, exact counts.

Threads call a real server (its own worker pool, the store's connection
pool) at the same time; the unique constraints and SQLite's BEGIN IMMEDIATE
must keep every allocation distinct. (With CLOUDNET_TEST_PG_URL set these
run on PostgreSQL too, where row locks and the constraints do it.)
"""

from __future__ import annotations

from typing import Any

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from netmgr.model.validation import NetworkSpec, PortSpec
from netmgr.store import ipam
from netmgr.store.facade import Store
from tests.lib.netmgr_cloud import Api, Cloud
from tests.lib.parallel import run_in_parallel

THREADS = 12
PER_THREAD = 8


def test_parallel_ports_get_distinct_ips_and_macs(cloud: Cloud,
                                                  acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    web = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="web",
                                                                       cidr="10.0.0.0/24")))

    def create(i: int) -> list[pb.Port]:
        return [api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id,
                                                                 name=f"t{i}-{n}")))
                for n in range(PER_THREAD)]

    ports = run_in_parallel(create, THREADS)
    total = THREADS * PER_THREAD
    assert len(ports) == total
    assert len({p.ip for p in ports}) == total
    assert len({p.mac for p in ports}) == total
    assert len({p.hostname for p in ports}) == total
    # Lowest-free allocation with no holes: exactly .2 to .(total+1).
    assert sorted(int(p.ip.rsplit(".", 1)[1]) for p in ports) == list(range(2, total + 2))
    # One generation per port, none lost: 1 (create) + total.
    router = api.GetRouter(pb.GetRouterRequest(id=web.router_id))
    assert router.desired_generation == 1 + total
    assert sorted(p.id for p in ports) == sorted(
        p.id for p in api.ListPorts(pb.ListPortsRequest(page_size=500)).ports)
    assert len(set(cloud.hooks.notified)) == 1
    assert len(cloud.hooks.notified) == total + 1
    assert cloud.row_counts()["ports"] == total


def test_parallel_networks_get_distinct_vlans_and_public_ips(cloud: Cloud) -> None:
    tenants = [cloud.new_tenant(f"t{i}") for i in range(THREADS)]
    per_thread = 3

    def create(i: int) -> list[pb.Network]:
        _, api = tenants[i]
        return [api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
            name=f"n{n}", cidr=f"10.{n}.0.0/24"))) for n in range(per_thread)]

    networks = run_in_parallel(create, THREADS)
    total = THREADS * per_thread
    assert len(networks) == total
    assert sorted(n.vlan_id for n in networks) == list(range(100, 100 + total))
    assert len({n.source_nat_ip for n in networks}) == total
    routers = cloud.store.list_routers_all()
    macs = [m for r in routers for m in (r.public_mac, r.guest_mac)]
    assert len(routers) == total
    assert len(set(macs)) == 2 * total
    counts = cloud.row_counts()
    assert (counts["networks"], counts["routers"], counts["public_ips"]) == (total,) * 3


def test_requested_ip_race_has_exactly_one_winner(acme: tuple[pb.Tenant, Api]) -> None:
    import grpc

    _, api = acme
    web = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="web",
                                                                       cidr="10.0.0.0/24")))

    def claim(i: int) -> list[str]:
        try:
            api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id, ip="10.0.0.50")))
            return ["ok"]
        except grpc.RpcError as e:
            return [e.code().name]

    outcomes = run_in_parallel(claim, THREADS)
    assert sorted(outcomes) == ["ALREADY_EXISTS"] * (THREADS - 1) + ["ok"]


def test_a_collision_on_a_unique_constraint_is_retried(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What PostgreSQL replicas see: two writers picked the same value; the
    loser's insert fails on the constraint and its transaction starts over."""
    store = Store(f"sqlite:///{tmp_path}/retry.db")
    try:
        tenant = store.create_tenant("acme")
        net = store.create_network(tenant.id, NetworkSpec(name="web", cidr="10.0.0.0/24"))
        first = store.create_port(tenant.id, PortSpec(network_id=net.id))
        real = ipam.allocate_mac
        calls: list[str] = []

        def stale_then_real(session: Any) -> str:
            calls.append("x")
            # The first attempt "read before the other writer committed".
            return first.mac if len(calls) == 1 else real(session)

        monkeypatch.setattr(ipam, "allocate_mac", stale_then_real)
        second = store.create_port(tenant.id, PortSpec(network_id=net.id))
        assert len(calls) == 2
        assert second.mac != first.mac
        assert second.ip != first.ip
        # The failed attempt burnt nothing: the generation moved by one.
        assert store.router_snapshot(net.router_id).router.desired_generation == 3
    finally:
        store.close()

