"""Network creates in parallel (on PostgreSQL they no longer wait for each
other: netmgr.store.concurrent_alloc): disjoint networks all made, each with
its own VLAN and source-NAT address; of overlapping ones exactly one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from tests.lib.netmgr_cloud import Api, Cloud


def create(api: Api, name: str, cidr: str) -> pb.Network | grpc.RpcError:
    try:
        return api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name=name,
                                                                             cidr=cidr)))
    except grpc.RpcError as e:
        return e


def test_disjoint_networks_in_parallel_get_distinct_vlans_and_addresses(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    with ThreadPoolExecutor(12) as pool:
        made = list(pool.map(lambda i: create(api, f"n{i}", f"10.{i}.0.0/24"), range(24)))
    assert all(isinstance(n, pb.Network) for n in made), made
    assert len({n.vlan_id for n in made}) == 24  # type: ignore[union-attr]
    ips = cloud.sql("SELECT ip FROM public_ips WHERE kind = 'source_nat'")
    assert len({ip for (ip,) in ips}) == 24
    # The lowest ones: nothing skipped for good.
    zone = api.GetZone(pb.GetZoneRequest())
    assert sorted(n.vlan_id for n in made) == list(  # type: ignore[union-attr]
        range(zone.vlan_min, zone.vlan_min + 24))


def test_overlapping_networks_in_parallel_make_one(cloud: Cloud,
                                                   acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    cidrs = ["10.1.0.0/16", "10.1.5.0/24", "10.1.5.128/25", "10.0.0.0/12", "10.1.5.0/24"] * 2
    with ThreadPoolExecutor(10) as pool:
        made = list(pool.map(lambda c: create(api, f"n{c[0]}", c[1]), enumerate(cidrs)))
    ok = [n for n in made if isinstance(n, pb.Network)]
    assert len(ok) == 1, made
    for e in made:
        if isinstance(e, grpc.RpcError):
            assert e.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.FAILED_PRECONDITION), e
    assert len(api.ListNetworks(pb.ListNetworksRequest()).networks) == 1
