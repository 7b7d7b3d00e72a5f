"""VPCs and tiers against a real server: creation, allocation, tenant
isolation, and bad input refused with the field named and nothing created."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from netmgr.reconcile.configbuild.router import build_router_config
from tests.lib.netmgr_cloud import Cloud, VpcApi, bad_fields, rpc_error

Code = grpc.StatusCode
UNKNOWN = "00000000-0000-4000-8000-000000000000"
VPC_TABLES = ("vpcs", "networks", "routers", "public_ips", "mac_addresses")


def counts(cloud: Cloud) -> dict[str, int]:
    return {t: cloud.sql(f"SELECT count(*) FROM {t}")[0][0] for t in VPC_TABLES}


def test_a_vpc_has_a_router_and_source_nat_ip_and_its_tiers_share_them(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc("shop", "10.0.0.0/16")
    assert vpc.router_id
    assert vpc.source_nat_ip
    assert vpc.domain == "shop.acme.cloud.internal"
    web = api.tier(vpc.id, "web", "10.0.1.0/24")
    db = api.tier(vpc.id, "db", "10.0.2.0/24", domain="data.example")
    assert web.vpc_id == db.vpc_id == vpc.id
    assert web.router_id == db.router_id == vpc.router_id
    assert web.source_nat_ip == db.source_nat_ip == vpc.source_nat_ip
    assert web.domain == "web.shop.acme.cloud.internal"
    assert db.domain == "data.example"
    assert list(web.domain_search) == [web.domain, vpc.domain]
    assert web.vlan_id != db.vlan_id
    assert web.gateway == "10.0.1.1"
    got = api.GetVpc(vpb.GetVpcRequest(id=vpc.id))
    assert list(got.tier_ids) == [web.id, db.id]
    router = api.GetRouter(pb.GetRouterRequest(id=vpc.router_id))
    assert router.vpc_id == vpc.id
    assert router.network_id == ""
    assert router.public_ip == vpc.source_nat_ip
    # Every tier bumped the router's generation; each notified the reconciler.
    assert router.desired_generation == 3
    assert cloud.hooks.notified.count(vpc.router_id) == 3


def test_each_tier_has_its_own_router_mac_on_its_own_interface(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc()
    tiers = [api.tier(vpc.id, f"t{i}", f"10.0.{i}.0/24") for i in range(1, 4)]
    cfg = build_router_config(cloud.store.router_snapshot(vpc.router_id))
    assert cfg.vpc_id == vpc.id
    guests = [i for i in cfg.interfaces if i.role == 1]  # INTERFACE_ROLE_GUEST
    assert sorted(i.network_id for i in guests) == sorted(t.id for t in tiers)
    macs = [i.mac for i in cfg.interfaces]
    assert len(set(macs)) == len(macs) == 4
    assert sorted(i.segment_id for i in guests) == sorted(t.vlan_id for t in tiers)
    assert {n.network_id for n in cfg.guest_networks} == {t.id for t in tiers}
    assert {s.public_ip for s in cfg.source_nats} == {vpc.source_nat_ip}
    assert sorted(s.source_cidr for s in cfg.source_nats) == sorted(t.cidr for t in tiers)
    # The tier MACs are claimed like every MAC (unique across ports and routers).
    claimed = {r[0] for r in cloud.sql("SELECT mac FROM mac_addresses")}
    assert set(macs) <= claimed


def test_the_vpc_router_answers_the_vpc_domain_itself(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc("shop", "10.0.0.0/16")
    api.tier(vpc.id, "web", "10.0.1.0/24")
    api.tier(vpc.id, "db", "10.0.2.0/24", domain="data.example")
    cfg = build_router_config(cloud.store.router_snapshot(vpc.router_id))
    assert list(cfg.dns.local_domains) == ["shop.acme.cloud.internal"]


def test_deleting_a_tier_frees_its_mac_and_an_empty_vpc_goes_with_its_router(acme_vpc):
    cloud, api = acme_vpc
    before = counts(cloud)
    vpc = api.vpc()
    tier = api.tier(vpc.id, "web", "10.0.1.0/24")
    err = rpc_error(lambda: api.DeleteVpc(vpb.DeleteVpcRequest(id=vpc.id)))
    assert err.code() == Code.FAILED_PRECONDITION
    api.DeleteNetwork(pb.DeleteNetworkRequest(id=tier.id))
    assert cloud.hooks.notified[-1] == vpc.router_id  # the router drops the tier
    api.DeleteVpc(vpb.DeleteVpcRequest(id=vpc.id))
    assert counts(cloud) == before


BAD_VPCS = [
    (dict(cidr="10.0.0.0/7"), "vpc.cidr"),
    (dict(cidr="10.0.0.0/29"), "vpc.cidr"),
    (dict(cidr="10.0.0.1/16"), "vpc.cidr"),
    (dict(cidr="10.0.0.0"), "vpc.cidr"),
    (dict(cidr="bogus"), "vpc.cidr"),
    (dict(cidr="203.0.113.0/24"), "vpc.cidr"),  # the zone's public network
    (dict(cidr="127.0.0.0/16"), "vpc.cidr"),
    (dict(name=""), "vpc.name"),
    (dict(name="a\nb"), "vpc.name"),
    (dict(domain="bad domain"), "vpc.domain"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_VPCS)
def test_bad_vpc_is_invalid_argument_naming_the_field(acme_vpc, fields: dict[str, Any],
                                                       field: str) -> None:
    cloud, api = acme_vpc
    before = counts(cloud)
    req = {"name": "vpc1", "cidr": "10.0.0.0/16", **fields}
    err = rpc_error(lambda: api.CreateVpc(vpb.CreateVpcRequest(vpc=vpb.Vpc(**req))))
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in bad_fields(err)
    assert counts(cloud) == before


BAD_TIERS = [
    (dict(cidr="10.1.0.0/24"), "network.cidr"),  # outside the VPC
    (dict(cidr="10.0.0.0/15"), "network.cidr"),  # wider than the VPC
    (dict(cidr="10.0.1.128/25"), "network.cidr"),  # overlaps tier web
    (dict(cidr="10.0.0.0/16"), "network.cidr"),  # the whole VPC overlaps web
    (dict(cidr="10.0.9.0/24", vpc_id="nope"), "network.vpc_id"),
    (dict(cidr="10.0.9.0/24", gateway="10.0.8.1"), "network.gateway"),
    (dict(cidr="10.0.9.0/24", domain="web.v.acme.cloud.internal"), "network.domain"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_TIERS)
def test_bad_tier_is_invalid_argument_naming_the_field(acme_vpc, fields: dict[str, Any],
                                                        field: str) -> None:
    cloud, api = acme_vpc
    vpc = api.vpc("v", "10.0.0.0/16")
    api.tier(vpc.id, "web", "10.0.1.0/24")
    before = counts(cloud)
    gen = api.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).desired_generation
    req = {"name": "t2", "vpc_id": vpc.id, **fields}
    err = rpc_error(lambda: api.CreateNetwork(pb.CreateNetworkRequest(
        network=pb.Network(**req))))
    assert err.code() == Code.INVALID_ARGUMENT, err
    assert field in bad_fields(err)
    assert counts(cloud) == before
    assert api.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).desired_generation == gen


def test_another_tenants_vpc_is_not_found(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc()
    _, other = cloud.new_tenant("other")
    oapi = VpcApi(cloud, other)
    for call in (lambda: oapi.GetVpc(vpb.GetVpcRequest(id=vpc.id)),
                 lambda: oapi.DeleteVpc(vpb.DeleteVpcRequest(id=vpc.id)),
                 lambda: oapi.tier(vpc.id, "x", "10.0.5.0/24"),
                 lambda: oapi.GetVpc(vpb.GetVpcRequest(id=UNKNOWN))):
        assert rpc_error(call).code() == Code.NOT_FOUND
    assert list(oapi.ListVpcs(vpb.ListVpcsRequest()).vpcs) == []
    assert [v.id for v in api.ListVpcs(vpb.ListVpcsRequest()).vpcs] == [vpc.id]


def test_vpc_rename_and_tenant_deletion_waits_for_vpcs(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc()
    got = api.UpdateVpc(vpb.UpdateVpcRequest(vpc=vpb.Vpc(id=vpc.id, name="renamed")))
    assert got.name == "renamed"
    assert got.cidr == vpc.cidr
    err = rpc_error(lambda: api.UpdateVpc(vpb.UpdateVpcRequest(vpc=vpb.Vpc(id=vpc.id, name=""),
                                                               update_mask={"paths": ["name"]})))
    assert "vpc.name" in bad_fields(err)
    tenant_id = got.tenant_id
    err = rpc_error(lambda: cloud.admin.DeleteTenant(pb.DeleteTenantRequest(id=tenant_id)))
    assert err.code() == Code.FAILED_PRECONDITION


def test_edge_objects_on_tiers_land_in_the_vpc_routers_config(acme_vpc):
    from netmgr.model.validation_edge import FirewallRuleSpec, PortForwardSpec

    cloud, api = acme_vpc
    vpc = api.vpc("v", "10.0.0.0/16")
    web = api.tier(vpc.id, "web", "10.0.1.0/24")
    db = api.tier(vpc.id, "db", "10.0.2.0/24")
    tenant = web.tenant_id
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id)))
    store = cloud.store
    ip, router_id = store.allocate_public_ip(tenant, web.id)
    assert router_id == vpc.router_id
    store.create_port_forward(tenant, PortForwardSpec(ip.id, "tcp", 80, 0, port.id, 8080, 0))
    store.set_egress_policy(tenant, db.id, True)
    store.create_firewall_rule(tenant, FirewallRuleSpec("egress", "", db.id, "tcp", 443, 0,
                                                        -1, -1))
    cfg = build_router_config(store.router_snapshot(vpc.router_id))
    pub = next(i for i in cfg.interfaces if i.role == 2)  # INTERFACE_ROLE_PUBLIC
    assert f"{ip.ip}/32" in pub.addresses
    (pf,) = cfg.port_forwards
    assert (pf.private_ip, pf.network_id) == (port.ip, web.id)
    # Egress policy and rules stay per tier (its own CIDR), beside the other tier's.
    assert [(p.source_cidr, p.default_deny) for p in cfg.egress_policies] == [
        (db.cidr, True)]
    assert [(r.source_cidr, r.port_start) for r in cfg.egress_rules] == [(db.cidr, 443)]
    # PENDING until the VPC router applied it (the tier's router is the VPC's).
    assert store.get_port_forward(tenant, pf.id).state.value == "pending"
    store.record_router_status(vpc.router_id, applied_generation=cfg.generation, services=(),
                               last_error="", port_errors={}, reachable=True)
    assert store.get_port_forward(tenant, pf.id).state.value == "active"


def test_a_tier_whose_default_domain_would_be_too_long_is_refused(acme_vpc):
    cloud, api = acme_vpc
    long = ".".join(("a" * 63, "b" * 63, "c" * 63, "d" * 61))  # 253 characters
    vpc = api.vpc("v", "10.0.0.0/16", domain=long)
    before = counts(cloud)
    err = rpc_error(lambda: api.tier(vpc.id, "web", "10.0.1.0/24"))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == ["network.domain"]
    assert counts(cloud) == before
    assert api.tier(vpc.id, "web", "10.0.1.0/24", domain="web.example").domain == "web.example"
