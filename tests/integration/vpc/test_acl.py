"""Network ACLs on VPC tiers, checked with real clients (socat, busybox ping)
between namespace guests of different tiers."""

from __future__ import annotations

import contextlib
import subprocess
import uuid

import grpc
import pytest
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from tests.lib.allinone import Tenant
from tests.lib.guest_servers import TCP, UDP, serve
from tests.lib.vpc import Stream, Vpc, ask, pings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shop_vpc(cloud):
    """One VPC for the module (on the VM backend each VPC is a router VM to
    boot): tiers web and db, one guest each; the db guest serves tcp/80,
    tcp/8080 and udp/5353 answering its port."""
    t = Tenant(cloud, f"acl{uuid.uuid4().hex[:6]}")
    procs: list[subprocess.Popen] = []
    try:
        v = Vpc(t, "shop", "10.30.0.0/16")
        web, db = v.tier("web", "10.30.1.0/24"), v.tier("db", "10.30.2.0/24")
        (_, gw), (pd, gd) = v.guest(web, "www1"), v.guest(db, "db1")
        for proto, port in ((TCP, 80), (TCP, 8080), (UDP, 5353)):
            serve(procs, gd, proto, port, f"{proto}{port}")
        yield v, web, db, gw, pd, gd
        with contextlib.suppress(grpc.RpcError):
            v.delete()
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=5)
        t.close()


@pytest.fixture
def shop(shop_vpc):
    """The module's VPC with every tier back on default_allow."""
    v = shop_vpc[0]
    allow = v.builtin("default_allow")
    for tier_id in v.call(v.stub.GetVpc, vpb.GetVpcRequest(id=v.vpc.id)).tier_ids:
        v.call(v.acls.ReplaceNetworkAcl, vpb.ReplaceNetworkAclRequest(
            network_id=tier_id, acl_id=allow))
    v.wait()
    return shop_vpc


def test_a_deny_on_one_tier_blocks_exactly_the_traffic_it_names(shop):
    v, _web, db, gw, pd, gd = shop
    assert ask(gw, TCP, pd.ip, 80) == "tcp80"  # default_allow
    acl = v.acl("db-rules")
    v.rule(acl.id, 100, "deny", "ingress", "tcp", port=80)
    v.rule(acl.id, 200, "allow", "ingress", "all")
    v.rule(acl.id, 300, "allow", "egress", "all")
    v.replace(db, acl.id)
    v.wait()
    assert ask(gw, TCP, pd.ip, 80) == ""
    assert ask(gw, TCP, pd.ip, 8080) == "tcp8080"
    assert ask(gw, UDP, pd.ip, 5353) == "udp5353"
    assert pings(gw, pd.ip)
    # The rule's state follows the router.
    rules = v.call(v.acls.ListAclRules, vpb.ListAclRulesRequest(acl_id=acl.id)).rules
    assert [r.number for r in rules] == [100, 200, 300]
    assert all(r.state == 2 for r in rules)  # OBJECT_STATE_ACTIVE
    # Each numbered rule counts what it matched: the deny saw the tcp/80 SYNs,
    # the allow the other new flows; replies pass before any list (egress 0).
    counters = {c.number: c.packets for c in v.call(
        v.acls.GetAclCounters, vpb.GetAclCountersRequest(acl_id=acl.id)).counters}
    assert counters[100] >= 1
    assert counters[200] >= 3
    assert counters[300] == 0
    # default_deny: nothing new passes either way.
    v.replace(db, v.builtin("default_deny"))
    v.wait()
    assert ask(gw, TCP, pd.ip, 8080) == ""
    assert not pings(gw, pd.ip)
    assert not pings(gd, gw.lease.ip)


def test_rule_numbers_decide_the_order(shop):
    v, web, db, gw, pd, _gd = shop
    acl = v.acl("ordered")
    allow = v.rule(acl.id, 10, "allow", "ingress", "tcp", port=80, cidrs=[web.cidr])
    v.rule(acl.id, 20, "deny", "ingress", "tcp", port=80, port_end=8080)
    v.rule(acl.id, 30, "allow", "ingress", "all")
    v.rule(acl.id, 40, "allow", "egress", "all")
    v.replace(db, acl.id)
    v.wait()
    # The lower-numbered allow beats the higher deny...
    assert ask(gw, TCP, pd.ip, 80) == "tcp80"
    assert ask(gw, TCP, pd.ip, 8080) == ""
    # ...and the other way round once the allow moves behind the deny (one
    # rule edited in place).
    moved = vpb.AclRule(**{f.name: getattr(allow, f.name) for f in vpb.AclRule.DESCRIPTOR.fields
                           if f.name in ("id", "action", "direction", "protocol", "port",
                                         "cidrs")}, number=25)
    v.call(v.acls.UpdateAclRule, vpb.UpdateAclRuleRequest(rule=moved))
    v.wait()
    assert ask(gw, TCP, pd.ip, 80) == ""
    assert ask(gw, UDP, pd.ip, 5353) == "udp5353"


def test_replacing_a_tiers_list_keeps_another_tiers_established_flow(shop, servers):
    v, _web, db, gw, pd, gd = shop
    app = v.tier("app", "10.30.3.0/24")
    pa, ga = v.guest(app, "app1")
    serve(servers, ga, TCP, 80, "app80")
    stream = Stream(servers, gd, gw, pd.ip, 7000)
    assert stream.echo("one") == "one"
    assert ask(gw, TCP, pa.ip, 80) == "app80"
    v.replace(app, v.builtin("default_deny"))
    v.wait()
    assert ask(gw, TCP, pa.ip, 80) == ""  # the new list holds...
    assert stream.echo("two") == "two"  # ...and the web-db stream never noticed
    # A list edit on the stream's own tier keeps it too (established first).
    acl = v.acl("db-strict")
    v.rule(acl.id, 10, "deny", "ingress", "all")
    v.replace(db, acl.id)
    v.wait()
    assert stream.echo("three") == "three"
    assert ask(gw, TCP, pd.ip, 8080) == ""
