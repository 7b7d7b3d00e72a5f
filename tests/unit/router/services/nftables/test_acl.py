"""The ACL part of the router's nftables table (pure): rules in number order,
verdicts, maps keyed on the tier interface, and configs refused whole."""

from __future__ import annotations

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ConfigError
from router.services.nftables import acl as nft_acl
from router.services.nftables import service as nftables
from tests.lib.routerconfigs import good_config, render

ACL = "11111111-2222-4333-8444-555555555555"


def vpc_config(*rules: pb.AclRule) -> pb.RouterConfig:
    cfg = good_config()
    cfg.vpc_id = "vpc-1"
    guest = next(i for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_GUEST)
    cfg.network_acls.append(pb.NetworkAcl(id=ACL, name="l", rules=list(rules)))
    cfg.tier_acls.append(pb.TierAcl(network_id=guest.network_id, interface=guest.name,
                                    acl_id=ACL))
    return cfg


def r(n: int, action: str = "allow", direction: str = "ingress", protocol: str = "tcp",
      **kw) -> pb.AclRule:
    kw.setdefault("id", f"rule{n}")
    return pb.AclRule(number=n, action=action, direction=direction, protocol=protocol, **kw)


def chain(cfg: pb.RouterConfig, suffix: str) -> list[str]:
    return next(c["rules"] + [c["default"]] for c in nft_acl.chains(cfg)
                if c["name"].endswith(suffix))


def test_rules_are_in_number_order_with_their_verdicts_and_a_final_deny():
    cfg = vpc_config(r(30, "allow", protocol="all"),
                     r(10, "deny", port_start=80),
                     r(20, "allow", protocol="icmp", icmp_type=8, icmp_code=-1,
                       cidrs=["10.0.0.0/8"]),
                     r(5, "allow", "egress", protocol="47", cidrs=["192.0.2.0/24"]))
    nft_acl.verify(cfg)
    assert chain(cfg, "_in") == [
        'tcp dport 80 counter drop comment "cn:acl:rule10:10"',
        'ip saddr { 10.0.0.0/8 } meta l4proto icmp icmp type 8 counter return '
        'comment "cn:acl:rule20:20"',
        'counter return comment "cn:acl:rule30:30"',
        f'counter drop comment "cn:acl-default-deny:{ACL}"',
    ]
    assert chain(cfg, "_out") == [
        'ip daddr { 192.0.2.0/24 } meta l4proto 47 counter return comment "cn:acl:rule5:5"',
        f'counter drop comment "cn:acl-default-deny:{ACL}"',
    ]
    text = render("nftables", cfg)[nftables.RULESET]
    assert "iifname vmap @acl_out" in text
    assert "oifname vmap @acl_in" in text
    # Conntrack first: the ACL lines come after the established shortcut.
    assert text.index("ct state established,related counter accept") < text.index(
        "iifname vmap @acl_out")


@pytest.mark.parametrize("bad", [
    r(0), r(1, action="maybe"), r(1, direction="sideways"), r(1, protocol="sctp"),
    r(1, protocol="256"), r(1, port_start=90, port_end=80), r(1, cidrs=["10.0.0.1/8"]),
    r(1, id="bad id"),
])
def test_bad_rules_reject_the_config(bad):
    with pytest.raises(ConfigError):
        nft_acl.verify(vpc_config(bad))


def test_duplicate_numbers_unknown_lists_and_non_vpc_routers_are_refused():
    with pytest.raises(ConfigError, match="used twice"):
        nft_acl.verify(vpc_config(r(1), r(1)))
    cfg = vpc_config(r(1))
    cfg.tier_acls[0].acl_id = "nope"
    with pytest.raises(ConfigError, match="not in the config"):
        nft_acl.verify(cfg)
    cfg = vpc_config(r(1))
    cfg.vpc_id = ""
    with pytest.raises(ConfigError, match="only served by a VPC router"):
        nft_acl.verify(cfg)


def test_an_isolated_router_renders_no_acl_lines():
    assert nft_acl.context(good_config()) == {"acl_chains": [], "acl_maps": [],
                                              "acl_forward": []}


def test_rule_counters_are_read_from_the_rules_comments():
    items = [
        {"rule": {"chain": "acl_x_in", "comment": "cn:acl:r1:10",
                  "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 180}},
                           {"drop": None}]}},
        {"rule": {"chain": "acl_x_out", "comment": "cn:acl:r1:10",
                  "expr": [{"counter": {"packets": 1, "bytes": 60}}]}},
        {"rule": {"chain": "forward", "comment": "cn:acl: out of a tier", "expr": []}},
        {"rule": {"chain": "forward", "comment": "replies",
                  "expr": [{"counter": {"packets": 9, "bytes": 9}}]}},
        {"set": {"name": "edge_ips"}},
    ]
    totals: dict[tuple[str, str], list[int]] = {}
    nft_acl.rule_counters(items, totals)
    assert totals == {("aclrule", "r1"): [4, 240]}
