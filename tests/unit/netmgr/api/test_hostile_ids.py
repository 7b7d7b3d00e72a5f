"""IDs have one form everywhere: a canonical lower-case UUID. Every field of
every netmgr request that carries an ID (found from the descriptors) refuses
anything else with INVALID_ARGUMENT naming the field, never NOT_FOUND,
INTERNAL or ABORTED; and no float field takes NaN or infinity."""

from __future__ import annotations

import math

import grpc
import pytest
from cloudnet.netmgr.v1 import (
    debug_pb2,
    edge_pb2,
    hosts_pb2,
    netmgr_pb2,
    router_vm_pb2,
    vpc_pb2,
    vpn_pb2,
)
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from tests.lib.grpc_methods import (
    float_paths,
    invoke,
    is_id_path,
    method_id,
    methods,
    string_paths,
    with_value,
)
from tests.lib.netmgr_cloud import ADMIN, Api, Cloud, bad_fields, rpc_error
from tests.lib.netmgr_edge import Edge

NETMGR = (netmgr_pb2, edge_pb2, vpc_pb2, vpn_pb2, hosts_pb2, debug_pb2, router_vm_pb2)
SOME_ID = "6f1c1a3e-7d3b-4a4c-9a55-0c1f5e1d2b3a"
BAD_IDS = [SOME_ID.upper(), "{" + SOME_ID + "}", SOME_ID.replace("-", ""), "x", "../etc"]
ID_CASES = [(m, p) for m in methods(*NETMGR) for p in string_paths(m.input_type)
            if is_id_path(p) and p != "port.device_id"]
FLOAT_CASES = [(m, p) for m in methods(*NETMGR) for p in float_paths(m.input_type)]


def _md(tenant_id: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {ADMIN}"), ("x-cloudnet-tenant", tenant_id))


def _assert_names(err: grpc.RpcError, field: str) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert field in bad_fields(err), (field, err.details())


def test_every_request_field_that_carries_an_id_is_found() -> None:
    paths = {p for _, p in ID_CASES}
    # A sample the descriptor walk must find (nested, repeated, in every service).
    assert {"id", "network_id", "port.network_id", "load_balancer.members[0].port_id",
            "vpn_connection.customer_gateway_id", "router_id", "dhcp.network_id",
            "ping.source.network_id", "network_acl.network_ids[0]", "ids[0]"} <= paths
    assert len(ID_CASES) > 100


@pytest.mark.parametrize(("method", "path"), ID_CASES,
                         ids=[f"{method_id(m)}:{p}" for m, p in ID_CASES])
def test_a_malformed_id_is_invalid_argument_naming_the_field(
        cloud: Cloud, acme: tuple[pb.Tenant, Api], method, path) -> None:
    tenant, _ = acme
    for bad in BAD_IDS:
        err = rpc_error(lambda bad=bad: invoke(cloud.channel, method,
                                               with_value(method, path, bad), _md(tenant.id)))
        _assert_names(err, path)


@pytest.mark.parametrize(("method", "path"), FLOAT_CASES,
                         ids=[f"{method_id(m)}:{p}" for m, p in FLOAT_CASES])
def test_a_float_field_refuses_nan_and_infinity(cloud: Cloud, acme: tuple[pb.Tenant, Api],
                                                method, path) -> None:
    tenant, _ = acme
    for bad in (math.nan, math.inf, -math.inf):
        err = rpc_error(lambda bad=bad: invoke(cloud.channel, method,
                                               with_value(method, path, bad), _md(tenant.id)))
        _assert_names(err, path)


def test_restart_router_with_an_upper_case_id(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="a",
                                                                       cidr="10.1.0.0/24")))
    err = rpc_error(lambda: api.RestartRouter(pb.RestartRouterRequest(id=net.router_id.upper())))
    _assert_names(err, "id")
    assert api.RestartRouter(pb.RestartRouterRequest(id=net.router_id)).id == net.router_id


def test_allocate_public_ip_with_an_upper_case_network_id(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="a",
                                                                       cidr="10.1.0.0/24")))
    edge = Edge(cloud, api)
    err = rpc_error(lambda: edge.AllocatePublicIp(epb.AllocatePublicIpRequest(
        network_id=net.id.upper())))
    _assert_names(err, "network_id")
    assert cloud.sql("SELECT count(*) FROM public_ips WHERE kind = 'tenant'") == [(0,)]
    ip = edge.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=net.id))
    assert ip.network_id == net.id


def test_the_tenant_header_is_a_canonical_id_too(cloud: Cloud,
                                                  acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    for token in (ADMIN, api.metadata[0][1].split(" ", 1)[1]):
        err = rpc_error(lambda token=token: cloud.api(token, tenant.id.upper()).ListNetworks(
            pb.ListNetworksRequest()))
        _assert_names(err, "x-cloudnet-tenant")
