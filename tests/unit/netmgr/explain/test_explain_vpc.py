"""``debug explain`` on VPC tiers: the deciding network ACL rule by number,
first match wins, no match denies (model only, no packets)."""

from __future__ import annotations

from cloudnet.netmgr.v1 import debug_pb2, debug_pb2_grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from netmgr.model.vpc import DEFAULT_DENY_ID

ALLOW, DENY = vpb.ACL_ACTION_ALLOW, vpb.ACL_ACTION_DENY
IN, OUT = vpb.ACL_DIRECTION_INGRESS, vpb.ACL_DIRECTION_EGRESS


def test_explain_names_the_acl_rule_that_decides(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc("v", "10.0.0.0/16")
    acl = api.CreateNetworkAcl(vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="db-rules")))

    def rule(number, action, direction, protocol, **kw):
        return api.CreateAclRule(vpb.CreateAclRuleRequest(rule=vpb.AclRule(
            acl_id=acl.id, number=number, action=action, direction=direction,
            protocol=protocol, **kw)))

    deny80 = rule(100, DENY, IN, "tcp", port=80)
    allow_all = rule(200, ALLOW, IN, "all")
    web = api.tier(vpc.id, "web", "10.0.1.0/24")
    db = api.tier(vpc.id, "db", "10.0.2.0/24", acl_id=acl.id)
    pw = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id)))
    pd = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=db.id)))
    stub = debug_pb2_grpc.DebugServiceStub(cloud.channel)

    def explain(src, to):
        return stub.Explain(debug_pb2.ExplainRequest(**{"from": src, "to": to}),
                            metadata=api.md, timeout=10)

    r = explain(pw.id, f"{pd.ip}:80/tcp")
    assert not r.allowed
    assert (r.decided_by_kind, r.decided_by_id) == ("aclrule", deny80.id)
    assert "rule 100" in r.reason
    r = explain(pw.id, f"{pd.ip}:8080/tcp")
    assert r.allowed
    assert r.decided_by_id == allow_all.id
    assert [s.object_kind for s in r.steps] == ["network", "vpc", "aclrule", "aclrule"]
    # The reply direction of db has no egress rule: a new flow from db is denied.
    r = explain(pd.id, f"{pw.ip}:22/tcp")
    assert not r.allowed
    assert r.decided_by_kind == "acl-default-deny"
    # Lower number first: an allow at 50 beats the deny at 100.
    rule(50, ALLOW, IN, "tcp", port=80, cidrs=[web.cidr])
    assert explain(pw.id, f"{pd.ip}:80/tcp").allowed
    # Out of the VPC: the tier's egress list first (db's has no egress rule).
    r = explain(pd.id, "198.51.100.10:80/tcp")
    assert not r.allowed
    assert r.decided_by_kind == "acl-default-deny"
    r = explain(pw.id, "198.51.100.10:80/tcp")
    assert r.allowed
    assert [s.object_kind for s in r.steps][-1] == "snat"
    api.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(network_id=web.id,
                                                       acl_id=DEFAULT_DENY_ID))
    r = explain(pw.id, f"{pd.ip}/icmp")
    assert not r.allowed
    assert r.decided_by_id == DEFAULT_DENY_ID
