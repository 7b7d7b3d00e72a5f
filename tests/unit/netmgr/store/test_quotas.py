"""Quotas through the real API: defaults, overrides, refusals that create
nothing, usage, and parallel clients racing a limit (SQLite, and PostgreSQL
with CLOUDNET_TEST_PG_URL set)."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import quota_pb2 as qpb
from cloudnet.netmgr.v1 import quota_pb2_grpc as qrpc

from tests.lib.netmgr_cloud import Api, Cloud, bad_fields, rpc_error
from tests.lib.netmgr_edge import Edge
from tests.lib.parallel import run_in_parallel

THREADS = 12
INGRESS = epb.FirewallDirection.Value("FIREWALL_DIRECTION_INGRESS")


def quotas(cloud: Cloud, api: Api) -> qrpc.QuotaServiceStub:
    stub = qrpc.QuotaServiceStub(cloud.channel)

    class Calls:
        def get(self, tenant_id: str = "") -> dict[str, qpb.Quota]:
            got = stub.GetQuotas(qpb.GetQuotasRequest(tenant_id=tenant_id),
                                 metadata=api.metadata, timeout=30)
            return {q.resource: q for q in got.quotas}

        def set(self, resource: str, limit: int, tenant_id: str = "",
                reset: bool = False) -> qpb.Quotas:
            return stub.SetQuota(qpb.SetQuotaRequest(tenant_id=tenant_id, resource=resource,
                                                     limit=limit, reset=reset),
                                 metadata=api.metadata, timeout=30)

    return Calls()  # type: ignore[return-value]


def network(api: Api, n: int) -> pb.Network:
    return api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name=f"n{n}", cidr=f"10.{n}.0.0/24")))


def test_default_then_override_then_reset(cloud: Cloud,
                                          acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    admin = quotas(cloud, cloud.admin)
    assert admin.get(tenant.id)["networks"].limit == -1  # unlimited until set
    admin.set("networks", 2)
    network(api, 1)
    network(api, 2)
    before = cloud.row_counts()
    err = rpc_error(lambda: network(api, 3))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota.networks" in err.details()
    assert "of 2 networks" in err.details()
    assert cloud.row_counts() == before  # no network, router, public IP or MAC left

    admin.set("networks", 3, tenant_id=tenant.id)  # the override wins
    network(api, 3)
    assert rpc_error(lambda: network(api, 4)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    shown = quotas(cloud, api).get()["networks"]  # the tenant's own view
    assert (shown.limit, shown.used, shown.overridden) == (3, 3, True)

    admin.set("networks", 0, tenant_id=tenant.id, reset=True)  # back to the default (2)
    shown = quotas(cloud, api).get()["networks"]
    assert (shown.limit, shown.overridden) == (2, False)
    api.DeleteNetwork(pb.DeleteNetworkRequest(id=api.ListNetworks(
        pb.ListNetworksRequest()).networks[0].id))
    assert quotas(cloud, api).get()["networks"].used == 2


def test_public_ips_count_source_nat_and_rules_have_their_own(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    admin = quotas(cloud, cloud.admin)
    admin.set("public_ips", 2, tenant_id=tenant.id)
    admin.set("firewall_rules", 1, tenant_id=tenant.id)
    net = network(api, 1)  # its source-NAT address is one of the two
    e = Edge(cloud, api)
    ip = e.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=net.id))
    err = rpc_error(lambda: e.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=net.id)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota.public_ips" in err.details()
    assert rpc_error(lambda: network(api, 2)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    def rule(port: int) -> epb.FirewallRule:
        return e.CreateFirewallRule(epb.CreateFirewallRuleRequest(firewall_rule=epb.FirewallRule(
            direction=INGRESS, public_ip_id=ip.id, protocol="tcp", port=port)))

    rule(22)
    err = rpc_error(lambda: rule(80))
    assert "quota.firewall_rules" in err.details()
    used = quotas(cloud, api).get()
    assert (used["public_ips"].used, used["firewall_rules"].used, used["ports"].used) == (2, 1, 0)


def test_who_may_see_and_set(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    other, _ = cloud.new_tenant("other")
    mine = quotas(cloud, api)
    assert rpc_error(lambda: mine.set("ports", 5)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert rpc_error(lambda: mine.get(other.id)).code() == grpc.StatusCode.PERMISSION_DENIED
    admin = quotas(cloud, cloud.admin)
    assert bad_fields(rpc_error(lambda: admin.set("bananas", 5))) == ["resource"]
    assert bad_fields(rpc_error(lambda: admin.set("ports", -7))) == ["limit"]
    deleted = cloud.admin.CreateTenant(pb.CreateTenantRequest(name="gone"))
    cloud.admin.DeleteTenant(pb.DeleteTenantRequest(id=deleted.id))
    assert rpc_error(lambda: admin.set("ports", 1, tenant_id=deleted.id)).code() == \
        grpc.StatusCode.NOT_FOUND


def test_parallel_ports_stop_exactly_at_the_limit(cloud: Cloud,
                                                 acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    limit = 10
    # A network per thread: nothing else (the router row a port bumps)
    # serialises the creates, only the quota's own lock.
    nets = [network(api, i) for i in range(THREADS)]
    quotas(cloud, cloud.admin).set("ports", limit, tenant_id=tenant.id)

    def create(i: int) -> list[grpc.StatusCode]:
        codes = []
        for n in range(3):
            try:
                api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=nets[i].id,
                                                                 name=f"t{i}-{n}")))
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        return codes

    codes = run_in_parallel(create, THREADS)
    assert codes.count(grpc.StatusCode.OK) == limit
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3 * THREADS - limit
    assert cloud.row_counts()["ports"] == limit


def test_parallel_networks_of_many_tenants_each_stop_at_their_limit(cloud: Cloud) -> None:
    tenants = [cloud.new_tenant(f"t{i}") for i in range(3)]
    quotas(cloud, cloud.admin).set("networks", 2)

    def create(i: int) -> list[grpc.StatusCode]:
        _, api = tenants[i % 3]
        codes = []
        for n in range(2):
            try:
                network(api, 10 * i + n)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        return codes

    codes = run_in_parallel(create, THREADS)
    assert codes.count(grpc.StatusCode.OK) == 2 * 3
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2 * THREADS - 2 * 3
    rows = cloud.sql("SELECT tenant_id, count(*) FROM networks GROUP BY tenant_id")
    assert sorted(n for _, n in rows) == [2, 2, 2]
