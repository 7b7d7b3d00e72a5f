"""Updating edge rules in place through the API (no routers): validated like a
create with the field named, conflicts refused, nothing half-applied, the same
content a no-op; the counters API's access rules; the CLI's update requests."""

from __future__ import annotations

import json
from typing import Any

import grpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf import field_mask_pb2

from netmgr.cli import main as cli
from tests.lib.netmgr_cloud import Cloud, bad_fields, rpc_error
from tests.lib.netmgr_edge import counts

INGRESS = epb.FIREWALL_DIRECTION_INGRESS


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_port_forward_update_validated_like_create(cloud: Cloud, edge_world) -> None:
    e, ip, p1 = edge_world["e"], edge_world["ip"], edge_world["p1"]
    f = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=ip.id, protocol="tcp", public_port=80, port_id=p1.id, private_port=8080)))
    e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=ip.id, protocol="tcp", public_port=90, public_port_end=99, port_id=p1.id,
        private_port=90)))

    def update(msg: epb.PortForward, *paths: str) -> epb.PortForward:
        return e.UpdatePortForward(epb.UpdatePortForwardRequest(port_forward=msg,
                                                                update_mask=mask(*paths)))

    u = update(epb.PortForward(id=f.id, public_port=81, private_port=9000),
               "public_port", "private_port")
    assert (u.public_port, u.public_port_end, u.private_port, u.private_port_end) == (
        81, 81, 9000, 9000)
    assert u.generation > f.generation
    assert u.state == pb.OBJECT_STATE_PENDING
    assert u.applied_generation < u.generation  # no router here applies anything
    u2 = update(epb.PortForward(id=f.id, public_port=82, public_port_end=84),
                "public_port", "public_port_end")
    assert (u2.public_port_end, u2.private_port, u2.private_port_end) == (84, 9000, 9002)
    # The same content: no new generation. An empty mask: the fields set.
    assert update(epb.PortForward(id=f.id, public_port=82, public_port_end=84),
                  "public_port", "public_port_end").generation == u2.generation
    u3 = e.UpdatePortForward(epb.UpdatePortForwardRequest(
        port_forward=epb.PortForward(id=f.id, source_cidrs=["192.0.2.0/24"])))
    assert list(u3.source_cidrs) == ["192.0.2.0/24"]
    assert u3.public_port == 82

    before, rows = e.GetPortForward(epb.GetPortForwardRequest(id=f.id)), counts(cloud)
    table = [
        (epb.PortForward(id=f.id, protocol="sctp"), ("protocol",), "port_forward.protocol"),
        (epb.PortForward(id=f.id, public_port=70000), ("public_port",),
         "port_forward.public_port"),
        (epb.PortForward(id=f.id, public_port=10, public_port_end=5),
         ("public_port", "public_port_end"), "port_forward.public_port_end"),
        (epb.PortForward(id=f.id, private_port=1, private_port_end=9),
         ("private_port", "private_port_end"), "port_forward.private_port_end"),
        (epb.PortForward(id=f.id, source_cidrs=["10.0.0.0/33"]), ("source_cidrs",),
         "port_forward.source_cidrs[0]"),
        (epb.PortForward(id=f.id, public_ip_id=ip.id), ("public_ip_id",), "update_mask"),
        (epb.PortForward(id=f.id), ("bogus",), "update_mask"),
        (epb.PortForward(id="not-an-id", public_port=1), ("public_port",), "port_forward.id"),
    ]
    for msg, paths, field in table:
        err = rpc_error(lambda m=msg, p=paths: update(m, *p))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.details())
        assert any(x.startswith(field) for x in bad_fields(err)), (field, bad_fields(err))
    err = rpc_error(lambda: update(epb.PortForward(id=f.id, public_port=95, public_port_end=95),
                                   "public_port", "public_port_end"))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "overlaps" in err.details()
    err = rpc_error(lambda: update(epb.PortForward(id=f.id, port_id=edge_world["p2"].id),
                                   "port_id"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # another network's port
    err = rpc_error(lambda: update(epb.PortForward(id=f.id, port_id=edge_world["op"].id),
                                   "port_id"))
    assert err.code() == grpc.StatusCode.NOT_FOUND  # another tenant's port
    assert e.GetPortForward(epb.GetPortForwardRequest(id=f.id)) == before
    assert counts(cloud) == rows


def test_firewall_rule_update(cloud: Cloud, edge_world) -> None:
    e = edge_world["e"]
    r = e.CreateFirewallRule(epb.CreateFirewallRuleRequest(firewall_rule=epb.FirewallRule(
        direction=INGRESS, public_ip_id=edge_world["ip"].id, protocol="tcp", port=22,
        cidrs=["192.0.2.0/24"])))

    def update(msg: epb.FirewallRule, *paths: str) -> epb.FirewallRule:
        return e.UpdateFirewallRule(epb.UpdateFirewallRuleRequest(firewall_rule=msg,
                                                                  update_mask=mask(*paths)))

    u = update(epb.FirewallRule(id=r.id, port=2200, port_end=2299), "port", "port_end")
    assert (u.port, u.port_end, list(u.cidrs)) == (2200, 2299, ["192.0.2.0/24"])
    u = update(epb.FirewallRule(id=r.id, protocol="icmp", icmp_type=8), "protocol", "icmp_type")
    assert (u.protocol, u.port, u.port_end, u.icmp_type, u.icmp_code) == ("icmp", 0, 0, 8, -1)
    before = e.GetFirewallRule(epb.GetFirewallRuleRequest(id=r.id))
    for msg, paths, field in (
            (epb.FirewallRule(id=r.id, icmp_type=300), ("icmp_type",), "firewall_rule.icmp_type"),
            (epb.FirewallRule(id=r.id, port=22), ("port",), "firewall_rule.port"),
            (epb.FirewallRule(id=r.id, direction=epb.FIREWALL_DIRECTION_EGRESS), ("direction",),
             "update_mask"),
            (epb.FirewallRule(id=r.id, cidrs=["x"]), ("cidrs",), "firewall_rule.cidrs[0]")):
        err = rpc_error(lambda m=msg, p=paths: update(m, *p))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert any(x.startswith(field) for x in bad_fields(err)), (field, bad_fields(err))
    assert e.GetFirewallRule(epb.GetFirewallRuleRequest(id=r.id)) == before


def test_counters_need_a_router_and_the_tenants_own_rules(cloud: Cloud, edge_world) -> None:
    stub = erpc.EdgeCounterServiceStub(cloud.channel)
    md = edge_world["api"].metadata

    def get(network_id: str, *ids: str) -> Any:
        return stub.GetEdgeCounters(epb.GetEdgeCountersRequest(network_id=network_id, ids=ids),
                                    metadata=md, timeout=30)

    other_net = edge_world["oip"].network_id
    assert rpc_error(lambda: get(other_net)).code() == grpc.StatusCode.NOT_FOUND
    assert rpc_error(lambda: get(edge_world["net"].id, edge_world["net"].id)).code() == \
        grpc.StatusCode.NOT_FOUND  # not a rule of that network
    # This server has no reconciler to reach routers through.
    assert rpc_error(lambda: get(edge_world["net"].id)).code() == \
        grpc.StatusCode.FAILED_PRECONDITION


def test_cli_updates_in_place(cloud: Cloud, edge_world, capsys) -> None:
    w = edge_world
    secret = cloud.admin.CreateToken(pb.CreateTokenRequest(
        tenant_id=w["net"].tenant_id, name="cli")).secret

    def run(*argv: str, rc: int = 0) -> Any:
        capsys.readouterr()
        got = cli.main(["--server", cloud.target, "--token", secret, "-o", "json", *argv])
        out, err = capsys.readouterr()
        assert got == rc, err
        return json.loads(out) if rc == 0 else err

    f = run("portforward", "create", "--public-ip", w["ip"].id, "--protocol", "tcp",
            "--public-port", "80", "--port", w["p1"].id, "--private-port", "8080",
            "--source", "192.0.2.0/24")
    u = run("portforward", "update", f["id"], "--private-port", "9000-9000", "--any-source")
    assert u["private_port"] == 9000, u
    assert not u.get("source_cidrs"), u
    r = run("firewall", "create", "ingress", "--public-ip", w["ip"].id, "--protocol", "tcp",
            "--ports", "22")
    u = run("firewall", "update", r["id"], "--ports", "2222", "--cidr", "198.51.100.0/24")
    assert u["port"] == 2222
    assert u["cidrs"] == ["198.51.100.0/24"]
    assert "nothing to update" in run("firewall", "update", r["id"], rc=2)
