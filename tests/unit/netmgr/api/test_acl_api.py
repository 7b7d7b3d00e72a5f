"""Network ACL lists and rules against a real server: validation naming the
field with nothing created, numbers unique per list, built-in lists fixed,
tier assignment and the router config it gives."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from netmgr.model.vpc import DEFAULT_ALLOW_ID, DEFAULT_DENY_ID
from netmgr.reconcile.configbuild.router import build_router_config
from tests.lib.netmgr_cloud import bad_fields, rpc_error

Code = grpc.StatusCode
ALLOW, DENY = vpb.ACL_ACTION_ALLOW, vpb.ACL_ACTION_DENY
IN, OUT = vpb.ACL_DIRECTION_INGRESS, vpb.ACL_DIRECTION_EGRESS


@pytest.fixture
def vpc_acl(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc("v", "10.0.0.0/16")
    acl = api.CreateNetworkAcl(vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="web-acl")))
    return cloud, api, vpc, acl


def rule(api, acl_id: str, **kw: Any) -> vpb.AclRule:
    fields = dict(acl_id=acl_id, number=100, action=ALLOW, direction=IN, protocol="tcp",
                  port=80)
    fields.update(kw)
    return api.CreateAclRule(vpb.CreateAclRuleRequest(rule=vpb.AclRule(**fields)))


def rule_count(cloud) -> int:
    return cloud.sql("SELECT count(*) FROM acl_rules")[0][0]


BAD_RULES = [
    (dict(number=0), "rule.number"),
    (dict(number=70000), "rule.number"),
    (dict(action=vpb.ACL_ACTION_UNSPECIFIED), "rule.action"),
    (dict(direction=vpb.ACL_DIRECTION_UNSPECIFIED), "rule.direction"),
    (dict(protocol="sctpish"), "rule.protocol"),
    (dict(protocol="256"), "rule.protocol"),
    (dict(protocol=""), "rule.protocol"),
    (dict(protocol="tcp\n"), "rule.protocol"),
    (dict(port=70000), "rule.port"),
    (dict(port=90, port_end=80), "rule.port_end"),
    (dict(port=0, port_end=80), "rule.port"),
    (dict(protocol="all", port=80), "rule.port"),
    (dict(protocol="icmp", port=0, icmp_type=300), "rule.icmp_type"),
    (dict(protocol="icmp", port=0, icmp_type=-1, icmp_code=3), "rule.icmp_code"),
    (dict(cidrs=["10.0.0.0/33"]), "rule.cidrs[0]"),
    (dict(cidrs=["0.0.0.0/0", "10.0.0.1/8"]), "rule.cidrs[1]"),
    (dict(cidrs=["bogus"]), "rule.cidrs[0]"),
    (dict(cidrs=["10.0.0.0/8", "2001:db8::/32"]), "rule.cidrs"),  # one family per rule
    (dict(cidrs=["2001:db8::1/32"]), "rule.cidrs[0]"),
    (dict(cidrs=["ff02::/16"]), "rule.cidrs[0]"),  # multicast
]


@pytest.mark.parametrize(("fields", "field"), BAD_RULES)
def test_bad_rule_is_invalid_argument_naming_the_field(vpc_acl, fields, field):
    cloud, api, vpc, acl = vpc_acl
    gen = api.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).desired_generation
    err = rpc_error(lambda: rule(api, acl.id, **fields))
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in bad_fields(err)
    assert rule_count(cloud) == 0
    assert api.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).desired_generation == gen


def test_numbers_are_unique_per_list_and_protocol_numbers_take_their_names(vpc_acl):
    _cloud, api, vpc, acl = vpc_acl
    first = rule(api, acl.id, number=100)
    err = rpc_error(lambda: rule(api, acl.id, number=100, direction=OUT))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == ["rule.number"]
    second = rule(api, acl.id, number=200, protocol="6", port=443)
    assert second.protocol == "tcp"
    assert second.port_end == 443
    gre = rule(api, acl.id, number=300, protocol="47", port=0)
    assert gre.protocol == "47"
    # Moving a rule onto a taken number is refused; the rule stays as it was.
    moved = vpb.AclRule(id=second.id, number=100, action=ALLOW, direction=IN, protocol="tcp",
                        port=443)
    err = rpc_error(lambda: api.UpdateAclRule(vpb.UpdateAclRuleRequest(rule=moved)))
    assert bad_fields(err) == ["rule.number"]
    rules = api.ListAclRules(vpb.ListAclRulesRequest(acl_id=acl.id)).rules
    assert [(r.id, r.number) for r in rules] == [(first.id, 100), (second.id, 200),
                                                 (gre.id, 300)]
    # The same number in another list is fine.
    other = api.CreateNetworkAcl(vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="other")))
    assert rule(api, other.id, number=100).number == 100


def test_builtin_lists_exist_in_every_vpc_and_cannot_change(vpc_acl):
    _cloud, api, vpc, _acl = vpc_acl
    acls = api.ListNetworkAcls(vpb.ListNetworkAclsRequest(vpc_id=vpc.id)).network_acls
    assert [(a.name, a.builtin) for a in acls] == [
        ("default_allow", True), ("default_deny", True), ("web-acl", False)]
    for builtin in (DEFAULT_ALLOW_ID, DEFAULT_DENY_ID):
        assert rpc_error(lambda b=builtin: rule(api, b)).code() == Code.FAILED_PRECONDITION
        err = rpc_error(lambda b=builtin: api.DeleteNetworkAcl(vpb.DeleteNetworkAclRequest(id=b)))
        assert err.code() == Code.FAILED_PRECONDITION
    err = rpc_error(lambda: api.CreateNetworkAcl(vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="default_deny"))))
    assert bad_fields(err) == ["network_acl.name"]


def test_tiers_get_lists_and_the_router_config_carries_them(vpc_acl):
    cloud, api, vpc, acl = vpc_acl
    r2 = rule(api, acl.id, number=20, action=DENY)
    r1 = rule(api, acl.id, number=10, protocol="icmp", port=0, icmp_type=8, icmp_code=-1)
    web = api.tier(vpc.id, "web", "10.0.1.0/24", acl_id=acl.id)
    db = api.tier(vpc.id, "db", "10.0.2.0/24")
    assert web.acl_id == acl.id
    assert db.acl_id == DEFAULT_ALLOW_ID
    cfg = build_router_config(cloud.store.router_snapshot(vpc.router_id))
    assert {(t.network_id, t.acl_id) for t in cfg.tier_acls} == {
        (web.id, acl.id), (db.id, DEFAULT_ALLOW_ID)}
    lists = {a.id: a for a in cfg.network_acls}
    assert set(lists) == {acl.id, DEFAULT_ALLOW_ID}
    assert [(r.id, r.number, r.action) for r in lists[acl.id].rules] == [
        (r1.id, 10, "allow"), (r2.id, 20, "deny")]
    # Replacing the list bumps the router once; the same list again is a no-op.
    gen = api.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).desired_generation
    api.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(network_id=web.id,
                                                       acl_id=DEFAULT_DENY_ID))
    api.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(network_id=web.id,
                                                       acl_id=DEFAULT_DENY_ID))
    assert api.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).desired_generation == gen + 1
    cfg2 = build_router_config(cloud.store.router_snapshot(vpc.router_id))
    assert {t.acl_id for t in cfg2.tier_acls} == {DEFAULT_DENY_ID, DEFAULT_ALLOW_ID}
    # A list in use cannot go; an unused one can.
    api.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(network_id=web.id, acl_id=acl.id))
    err = rpc_error(lambda: api.DeleteNetworkAcl(vpb.DeleteNetworkAclRequest(id=acl.id)))
    assert err.code() == Code.FAILED_PRECONDITION


def test_a_list_of_another_vpc_or_an_isolated_network_is_refused(vpc_acl):
    _cloud, api, _vpc, acl = vpc_acl
    other = api.vpc("other", "10.1.0.0/16")
    err = rpc_error(lambda: api.tier(other.id, "t", "10.1.1.0/24", acl_id=acl.id))
    assert bad_fields(err) == ["network.acl_id"]
    tier = api.tier(other.id, "t", "10.1.1.0/24")
    err = rpc_error(lambda: api.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(
        network_id=tier.id, acl_id=acl.id)))
    assert bad_fields(err) == ["acl_id"]
    iso = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="iso", cidr="10.9.0.0/24")))
    err = rpc_error(lambda: api.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(
        network_id=iso.id, acl_id=DEFAULT_DENY_ID)))
    assert bad_fields(err) == ["network_id"]
    err = rpc_error(lambda: api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="iso2", cidr="10.8.0.0/24", acl_id=DEFAULT_DENY_ID))))
    assert bad_fields(err) == ["network.acl_id"]


def test_a_list_holds_at_most_the_rules_the_router_accepts(vpc_acl, monkeypatch):
    from netmgr.store import acls as store_acl
    from router.services.nftables import acl as nft_acl

    assert store_acl.MAX_ACL_RULES <= nft_acl.MAX_RULES
    cloud, api, _vpc, acl = vpc_acl
    monkeypatch.setattr(store_acl, "MAX_ACL_RULES", 3)
    for n in (1, 2, 3):
        rule(api, acl.id, number=n)
    err = rpc_error(lambda: rule(api, acl.id, number=4))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert "rule.acl_id" in err.details()
    assert rule_count(cloud) == 3
