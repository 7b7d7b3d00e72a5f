"""Create calls with a client request ID (metadata x-request-id): a retry
returns the same object and makes nothing more; on SQLite and, when
CLOUDNET_TEST_PG_URL is set, PostgreSQL (the netmgr_cloud fixture)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from tests.lib.netmgr_cloud import Api, Cloud, bad_fields, rpc_error


def create(api: Api, method: str, request: object, rid: str | None) -> object:
    stub = api.networks if method == "CreateNetwork" else api.ports
    md = api.metadata if rid is None else (*api.metadata, ("x-request-id", rid))
    return getattr(stub, method)(request, metadata=md, timeout=30)


def net_request(name: str, cidr: str) -> pb.CreateNetworkRequest:
    return pb.CreateNetworkRequest(network=pb.Network(name=name, cidr=cidr))


def test_retried_creates_return_the_same_objects(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    first = create(api, "CreateNetwork", net_request("web", "10.0.0.0/24"), "req-1")
    again = create(api, "CreateNetwork", net_request("web", "10.0.0.0/24"), "req-1")
    assert again.id == first.id  # type: ignore[attr-defined]
    nets = api.ListNetworks(pb.ListNetworksRequest()).networks
    assert [n.id for n in nets] == [first.id]  # type: ignore[attr-defined]
    port_req = pb.CreatePortRequest(port=pb.Port(network_id=first.id))  # type: ignore[attr-defined]
    port = create(api, "CreatePort", port_req, "req-2")
    assert create(api, "CreatePort", port_req, "req-2").id == port.id  # type: ignore[attr-defined]
    # Without an ID (or with another) a create is a new object.
    other = create(api, "CreatePort", port_req, None)
    assert other.id != port.id  # type: ignore[attr-defined]
    assert len(api.ListPorts(pb.ListPortsRequest()).ports) == 2


def test_parallel_retries_make_one_object(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: create(api, "CreateNetwork",
                                            net_request("par", "10.5.0.0/24"), "same").id,
                           range(8)))
    assert len(ids) == 1
    assert len(api.ListNetworks(pb.ListNetworksRequest()).networks) == 1


def test_request_ids_are_per_tenant(cloud: Cloud) -> None:
    _, a = cloud.new_tenant("a")
    _, b = cloud.new_tenant("b")
    na = create(a, "CreateNetwork", net_request("n", "10.0.0.0/24"), "shared")
    nb = create(b, "CreateNetwork", net_request("n", "10.0.0.0/24"), "shared")
    assert na.id != nb.id  # type: ignore[attr-defined]


@pytest.mark.parametrize("rid", ["", "x" * 65, "a b", "a/b", "a;b"])
def test_bad_request_ids_named(acme: tuple[pb.Tenant, Api], rid: str) -> None:
    _, api = acme
    err = rpc_error(lambda: create(api, "CreateNetwork", net_request("web", "10.0.0.0/24"),
                                   rid))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert bad_fields(err) == ["x-request-id"]
    assert not api.ListNetworks(pb.ListNetworksRequest()).networks


def test_an_id_used_by_another_method_is_refused(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    net = create(api, "CreateNetwork", net_request("web", "10.0.0.0/24"), "one")
    with pytest.raises(grpc.RpcError) as e:
        create(api, "CreatePort", pb.CreatePortRequest(port=pb.Port(
            network_id=net.id)), "one")  # type: ignore[attr-defined]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CreateNetwork" in str(e.value.details())
    assert not api.ListPorts(pb.ListPortsRequest()).ports


def test_edge_creates_replayed_by_request_id(cloud: Cloud, edge_world: dict[str, Any]) -> None:
    w = edge_world
    md = (*w["api"].metadata,)
    ch = cloud.channel
    calls = [
        (erpc.PortForwardServiceStub(ch).CreatePortForward, epb.CreatePortForwardRequest(
            port_forward=epb.PortForward(public_ip_id=w["ip"].id, protocol="tcp",
                                         public_port=80, port_id=w["p1"].id,
                                         private_port=8080)), "ListPortForwards"),
        (erpc.FirewallServiceStub(ch).CreateFirewallRule, epb.CreateFirewallRuleRequest(
            firewall_rule=epb.FirewallRule(direction=epb.FIREWALL_DIRECTION_INGRESS,
                                           public_ip_id=w["ip"].id, protocol="tcp", port=22,
                                           cidrs=["192.0.2.0/24"])), ""),
        (erpc.LoadBalancerServiceStub(ch).CreateLoadBalancer, epb.CreateLoadBalancerRequest(
            load_balancer=epb.LoadBalancer(public_ip_id=w["ip"].id, public_port=443,
                                           protocol="tcp", private_port=8443,
                                           members=[epb.LoadBalancerMember(
                                               port_id=w["p1"].id)])), ""),
    ]
    for i, (method, request, _) in enumerate(calls):
        rid = (("x-request-id", f"edge-{i}"),)
        first = method(request, metadata=md + rid, timeout=30)
        again = method(request, metadata=md + rid, timeout=30)
        assert again.id == first.id, method
    # Without the ID the same forward is a conflict, not a second object.
    err = rpc_error(lambda: calls[0][0](calls[0][1], metadata=md, timeout=30))
    assert err.code() != grpc.StatusCode.OK
    forwards = erpc.PortForwardServiceStub(ch).ListPortForwards(
        epb.ListPortForwardsRequest(), metadata=md, timeout=30).port_forwards
    assert len(forwards) == 1
