"""The edge API on a real netmgr server (no routers): validation with field
names, tenant isolation, conflicts, states from the router's reports, the
router config built from the model, and the CLI."""

from __future__ import annotations

import json
from typing import Any

import grpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from netmgr.cli import main as cli
from netmgr.model import edge as me
from netmgr.reconcile.configbuild.router import build_router_config
from tests.lib.netmgr_cloud import Cloud, bad_fields, rpc_error
from tests.lib.netmgr_edge import counts


def generation(c: Cloud, router_id: str) -> int:
    return int(c.sql(f"SELECT desired_generation FROM routers WHERE id = '{router_id}'")[0][0])


def pf(w: dict[str, Any], **kw: Any) -> epb.CreatePortForwardRequest:
    f = dict(public_ip_id=w["ip"].id, protocol="tcp", public_port=80, port_id=w["p1"].id,
             private_port=8080)
    f.update(kw)
    return epb.CreatePortForwardRequest(port_forward=epb.PortForward(**f))


def test_rule_changes_reach_the_hooks_as_committed_model_objects(cloud: Cloud, edge_world) -> None:
    e, w = edge_world["e"], edge_world
    rid = w["net"].router_id
    f = e.CreatePortForward(pf(w))
    router_id, gen, removed, added = cloud.hooks.edge_changes[-1]
    assert (router_id, gen, removed) == (rid, generation(cloud, rid), ())
    (obj,) = added
    assert isinstance(obj, me.PortForward)
    assert (obj.id, obj.private_ip, obj.public_port) == (f.id, w["p1"].ip, 80)
    assert cloud.hooks.notified[-1] == rid
    e.DeletePortForward(epb.DeletePortForwardRequest(id=f.id))
    assert cloud.hooks.edge_changes[-1] == (rid, generation(cloud, rid),
                                             (("portforward", f.id),), ())


def test_bad_port_forwards_name_the_field_and_change_nothing(cloud: Cloud, edge_world) -> None:
    e, w = edge_world["e"], edge_world
    e.CreatePortForward(pf(w))
    before, gen = counts(cloud), generation(cloud, w["net"].router_id)
    invalid = [
        (dict(public_port=0), "port_forward.public_port"),
        (dict(public_port=65536), "port_forward.public_port"),
        (dict(public_port=90, public_port_end=85), "port_forward.public_port_end"),
        (dict(public_port=90, public_port_end=95, private_port=100, private_port_end=102),
         "port_forward.private_port_end"),
        (dict(protocol="icmp"), "port_forward.protocol"),
        (dict(source_cidrs=["10.0.0.0/33"]), "port_forward.source_cidrs[0]"),
        (dict(source_cidrs=["10.0.0.1/8"]), "port_forward.source_cidrs[0]"),
        (dict(public_ip_id="nope"), "port_forward.public_ip_id"),
    ]
    for fields, field in invalid:
        err = rpc_error(lambda f=fields: e.CreatePortForward(pf(w, **f)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert field in bad_fields(err), (fields, bad_fields(err))
    others = [
        (dict(public_port=70, public_port_end=80), grpc.StatusCode.ALREADY_EXISTS),
        (dict(public_ip_id=w["oip"].id), grpc.StatusCode.NOT_FOUND),
        (dict(port_id=w["op"].id), grpc.StatusCode.NOT_FOUND),
        (dict(port_id=w["p2"].id), grpc.StatusCode.FAILED_PRECONDITION),
    ]
    for fields, code in others:
        err = rpc_error(lambda f=fields: e.CreatePortForward(pf(w, public_port=85, **f)
                                                            if "public_port" not in f
                                                            else pf(w, **f)))
        assert err.code() == code, (fields, err.details())
    # (A network's source-NAT address takes forwards too: test_source_nat_edge.py.)
    snat = next(i for i in e.ListPublicIps(epb.ListPublicIpsRequest()).public_ips
                if i.source_nat and i.network_id == w["net2"].id)
    err = rpc_error(lambda: e.CreatePortForward(pf(w, public_ip_id=snat.id, public_port=99)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # p1 is not on net2
    assert "port_forward.port_id" in err.details()
    assert counts(cloud) == before
    assert generation(cloud, w["net"].router_id) == gen


def test_bad_firewall_rules_and_load_balancers(cloud: Cloud, edge_world) -> None:
    e, w = edge_world["e"], edge_world
    before = counts(cloud)
    rules = [
        (dict(direction=epb.FIREWALL_DIRECTION_INGRESS, public_ip_id=w["ip"].id,
              protocol="tcp", port=10, port_end=5), "firewall_rule.port_end"),
        (dict(direction=epb.FIREWALL_DIRECTION_INGRESS, public_ip_id=w["ip"].id,
              protocol="gre"), "firewall_rule.protocol"),
        (dict(direction=epb.FIREWALL_DIRECTION_EGRESS, network_id=w["net"].id,
              protocol="icmp", icmp_type=300), "firewall_rule.icmp_type"),
        (dict(direction=epb.FIREWALL_DIRECTION_EGRESS, network_id=w["net"].id,
              protocol="all", cidrs=["x"]), "firewall_rule.cidrs[0]"),
        (dict(protocol="tcp"), "firewall_rule.direction"),
    ]
    for fields, field in rules:
        err = rpc_error(lambda f=fields: e.CreateFirewallRule(
            epb.CreateFirewallRuleRequest(firewall_rule=epb.FirewallRule(**f))))
        assert field in bad_fields(err), (fields, bad_fields(err))
    lb = dict(public_ip_id=w["ip"].id, public_port=80, protocol="http", private_port=8080)
    lbs = [
        (dict(members=[epb.LoadBalancerMember(port_id=w["p1"].id, weight=999)]),
         "load_balancer.members[0].weight"),
        (dict(protocol="tcp", stickiness="cookie"), "load_balancer.stickiness"),
        (dict(health_check=epb.LoadBalancerHealthCheck(type="http", path="/x\ny")),
         "load_balancer.health_check.path"),
        # What HAProxy's config parser would not take literally (a quote,
        # an environment variable, a comment, an escape).
        (dict(health_check=epb.LoadBalancerHealthCheck(type="http", path="/a'b")),
         "load_balancer.health_check.path"),
        (dict(health_check=epb.LoadBalancerHealthCheck(type="http", path="/a${HOME}")),
         "load_balancer.health_check.path"),
        (dict(health_check=epb.LoadBalancerHealthCheck(type="http", path="/a#b")),
         "load_balancer.health_check.path"),
        (dict(health_check=epb.LoadBalancerHealthCheck(type="http", path="/a\\b")),
         "load_balancer.health_check.path"),
        (dict(health_check=epb.LoadBalancerHealthCheck(interval_ms=5)),
         "load_balancer.health_check.interval_ms"),
    ]
    for fields, field in lbs:
        spec = dict(lb)
        spec.update(fields)
        err = rpc_error(lambda s=spec: e.CreateLoadBalancer(
            epb.CreateLoadBalancerRequest(load_balancer=epb.LoadBalancer(**s))))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (fields, err.details())
        assert field in bad_fields(err), (fields, bad_fields(err))
    err = rpc_error(lambda: e.CreateLoadBalancer(epb.CreateLoadBalancerRequest(
        load_balancer=epb.LoadBalancer(members=[epb.LoadBalancerMember(port_id=w["p2"].id)],
                                       **lb))))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "members[0].port_id" in err.details()
    assert counts(cloud) == before


def test_a_health_check_path_haproxy_would_refuse_is_refused_on_update_too(
        cloud: Cloud, edge_world) -> None:
    e, w = edge_world["e"], edge_world
    lb = e.CreateLoadBalancer(epb.CreateLoadBalancerRequest(load_balancer=epb.LoadBalancer(
        public_ip_id=w["ip"].id, public_port=80, protocol="http", private_port=8080,
        members=[epb.LoadBalancerMember(port_id=w["p1"].id)],
        health_check=epb.LoadBalancerHealthCheck(type="http", path="/health"))))
    gen = generation(cloud, w["net"].router_id)
    bad = epb.LoadBalancer()
    bad.CopyFrom(lb)
    bad.health_check.path = "/a'b"
    err = rpc_error(lambda: e.UpdateLoadBalancer(epb.UpdateLoadBalancerRequest(
        load_balancer=bad)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err) == ["load_balancer.health_check.path"]
    assert generation(cloud, w["net"].router_id) == gen
    assert e.GetLoadBalancer(epb.GetLoadBalancerRequest(id=lb.id)).health_check.path == "/health"


def test_states_follow_the_router_and_config_carries_the_rules(cloud: Cloud, edge_world) -> None:
    e, w = edge_world["e"], edge_world
    f = e.CreatePortForward(pf(w, public_port=7000, public_port_end=7001, private_port=9000))
    assert f.state == pb.OBJECT_STATE_PENDING
    assert f.private_ip == w["p1"].ip
    router_id = w["net"].router_id
    snap = cloud.store.router_snapshot(router_id)
    cfg = build_router_config(snap)
    pub = next(i for i in cfg.interfaces if i.name == "pub0")
    assert f"{w['ip'].ip}/32" in pub.addresses
    (rule,) = cfg.port_forwards
    assert (rule.public_port_start, rule.public_port_end, rule.private_port_start,
            rule.private_port_end) == (7000, 7001, 9000, 9001)
    assert build_router_config(cloud.store.router_snapshot(router_id)) == cfg  # pure, stable
    cloud.store.record_router_status(router_id, applied_generation=snap.router.desired_generation,
                                     services=[], last_error="", port_errors={}, reachable=True)
    got = e.GetPortForward(epb.GetPortForwardRequest(id=f.id))
    assert got.state == pb.OBJECT_STATE_ACTIVE
    cloud.store.record_edge_status(router_id, {("portforward", f.id): "boom"})
    got = e.GetPortForward(epb.GetPortForwardRequest(id=f.id))
    assert got.state == pb.OBJECT_STATE_ERROR
    assert got.error == "boom"
    cloud.store.record_edge_status(router_id, {})
    assert e.GetPortForward(epb.GetPortForwardRequest(id=f.id)).state == pb.OBJECT_STATE_ACTIVE
    # The address is in use: not releasable; another tenant cannot see it.
    err = rpc_error(lambda: e.ReleasePublicIp(epb.ReleasePublicIpRequest(id=w["ip"].id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert w["oip"].id not in {i.id for i in e.ListPublicIps(epb.ListPublicIpsRequest())
                               .public_ips}
    e.DeletePortForward(epb.DeletePortForwardRequest(id=f.id))
    e.ReleasePublicIp(epb.ReleasePublicIpRequest(id=w["ip"].id))
    assert not build_router_config(cloud.store.router_snapshot(router_id)).public_addresses


def test_cli_creates_and_lists_edge_objects(cloud: Cloud, edge_world, capsys) -> None:
    w = edge_world
    secret = cloud.admin.CreateToken(pb.CreateTokenRequest(
        tenant_id=w["net"].tenant_id, name="cli")).secret

    def run(*argv: str) -> Any:
        capsys.readouterr()
        rc = cli.main(["--server", cloud.target, "--token", secret, "-o", "json", *argv])
        out, err = capsys.readouterr()
        assert rc == 0, err
        return json.loads(out)

    ip = run("publicip", "allocate", "--network", w["net"].id)
    f = run("portforward", "create", "--public-ip", ip["id"], "--protocol", "udp",
            "--public-port", "5000-5002", "--port", w["p1"].id, "--private-port", "6000-6002",
            "--source", "192.0.2.0/24")
    assert f["public_port_end"] == 5002
    assert f["private_port_end"] == 6002
    r = run("firewall", "create", "egress", "--network", w["net"].id, "--protocol", "tcp",
            "--ports", "443", "--cidr", "0.0.0.0/0")
    assert r["direction"] == "FIREWALL_DIRECTION_EGRESS"
    assert run("firewall", "egress-policy", w["net"].id, "deny")["default_action"] == \
        "EGRESS_ACTION_DENY"
    lb = run("lb", "create", "--public-ip", ip["id"], "--port", "80", "--protocol", "http",
             "--private-port", "8080", "--member", f"{w['p1'].id}:3", "--sticky", "cookie",
             "--check", "http", "--check-path", "/health")
    assert lb["members"][0]["weight"] == 3
    assert lb["stickiness"] == "cookie"
    lb = run("lb", "update", lb["id"], "--protocol", "tcp", "--algorithm", "leastconn",
             "--member", w["p1"].id)
    assert lb["algorithm"] == "leastconn"
    assert lb["public_port"] == 80
    assert len(run("portforward", "list")) == 1
    assert len(run("lb", "list")) == 1
    capsys.readouterr()
    assert cli.main(["--server", cloud.target, "--token", secret, "portforward", "create",
                     "--public-ip", ip["id"], "--protocol", "tcp", "--public-port", "x",
                     "--port", w["p1"].id]) == 2
