"""One rule changed end to end goes as an edge delta (no config push): the
router journals it instead of rewriting its config; rules are updated in
place; per-rule counters count the rule that matched and not another; bad
updates are refused naming the field, with nothing applied."""

from __future__ import annotations

import os

import grpc
import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from google.protobuf import field_mask_pb2

from router.services.base import RouterPaths
from router.services.nftables.journal import read_journal
from tests.lib.edge import Edge, setup_net
from tests.lib.guest_servers import TCP, ask, in_ns, serve

pytestmark = pytest.mark.integration

INGRESS = epb.FIREWALL_DIRECTION_INGRESS
SITE_CIDR = "10.57.0.0/24"


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def on_host(cloud) -> bool:
    """A namespace router: its agent's journal is a file on this host (a VM
    router's is inside the VM), and its kernel counts established packets
    per rule (the appliance's 6.1 counts each connection's first packet
    only: router/services/nftables/compat.py)."""
    return cloud.router_backend != "vm"


def test_rule_changes_are_deltas_updates_in_place_and_counted(cloud, site,
                                                              servers):
    t, net, (p1, p2), (g1, g2) = setup_net(site, 2)
    e = Edge(t)
    counters = erpc.EdgeCounterServiceStub(t.api.channel)
    ip = e.public_ip(net.id)
    serve(servers, g1, TCP, 8080, "g1")
    serve(servers, g2, TCP, 8080, "g2")
    f1 = e.forward(public_ip_id=ip.id, protocol=TCP, public_port=80, port_id=p1.id,
                   private_port=8080)
    e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f1.id))
    journal = RouterPaths(os.path.join(cloud.state_dir, "agent", "routers",
                                       net.router_id)).edge_journal
    f2 = e.forward(public_ip_id=ip.id, protocol=TCP, public_port=81, port_id=p2.id,
                   private_port=8080)
    f2 = e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f2.id))
    assert f2.applied_generation >= f2.generation  # ACTIVE: the router runs it
    # The router got f2 as a delta to f2's generation, and journaled it.
    if on_host(cloud):
        deltas = read_journal(journal)
        assert deltas
        assert deltas[-1].generation == f2.generation
        assert [f.id for f in deltas[-1].port_forwards] == [f2.id]

    inet = cloud.inet_ns
    for _ in range(3):
        assert ask(inet, TCP, ip.ip, 80) == "g1"
    got = e.call(counters.GetEdgeCounters, epb.GetEdgeCountersRequest(
        network_id=net.id, ids=[f1.id, f2.id]))
    by_id = {c.id: c for c in got.counters}
    assert by_id[f1.id].kind == "portforward"
    # ≥ SYN, ACK, data each (the first packet of each on a VM router)
    assert by_id[f1.id].packets >= (3 * 3 if on_host(cloud) else 3)
    assert by_id[f1.id].bytes > 0
    assert by_id[f2.id].packets == 0
    assert by_id[f2.id].bytes == 0
    assert ask(inet, TCP, ip.ip, 81) == "g2"
    got = e.call(counters.GetEdgeCounters, epb.GetEdgeCountersRequest(network_id=net.id))
    assert {c.id: c.packets > 0 for c in got.counters if c.kind == "portforward"} == {
        f1.id: True, f2.id: True}

    # In place: f1 now forwards to g2; the old target no longer answers on 80.
    f1u = e.call(e.forwards.UpdatePortForward, epb.UpdatePortForwardRequest(
        port_forward=epb.PortForward(id=f1.id, port_id=p2.id), update_mask=mask("port_id")))
    assert f1u.generation > f1.generation
    assert f1u.port_id == p2.id
    e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f1.id))
    assert ask(inet, TCP, ip.ip, 80) == "g2"
    if on_host(cloud):
        assert read_journal(journal)[-1].generation == f1u.generation

    # Bad updates: refused naming the field, nothing changes.
    before = e.call(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f1.id))
    with pytest.raises(grpc.RpcError) as err:
        e.call(e.forwards.UpdatePortForward, epb.UpdatePortForwardRequest(
            port_forward=epb.PortForward(id=f1.id, public_port=81),
            update_mask=mask("public_port")))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "port_forward.public_port" in str(err.value.details()) or "81" in err.value.details()
    for req, field in (
            (epb.UpdatePortForwardRequest(port_forward=epb.PortForward(id=f1.id, public_port=0),
                                          update_mask=mask("public_port")),
             "port_forward.public_port"),
            (epb.UpdatePortForwardRequest(port_forward=epb.PortForward(id=f1.id),
                                          update_mask=mask("public_ip_id")), "update_mask"),
            (epb.UpdatePortForwardRequest(port_forward=epb.PortForward(
                id=f1.id, source_cidrs=["300.1.1.1/8"]), update_mask=mask("source_cidrs")),
             "port_forward.source_cidrs")):
        with pytest.raises(grpc.RpcError) as err:
            e.call(e.forwards.UpdatePortForward, req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in str(err.value.trailing_metadata()) + err.value.details(), field
    after = e.call(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f1.id))
    assert after == before
    # The same content again changes nothing (no new generation).
    same = e.call(e.forwards.UpdatePortForward, epb.UpdatePortForwardRequest(
        port_forward=epb.PortForward(id=f1.id, port_id=p2.id), update_mask=mask("port_id")))
    assert same.generation == before.generation

    # A firewall rule updated in place.
    r = e.rule(direction=INGRESS, public_ip_id=ip.id, protocol="tcp", port=22,
               cidrs=["192.0.2.0/24"])
    r2 = e.call(e.firewall.UpdateFirewallRule, epb.UpdateFirewallRuleRequest(
        firewall_rule=epb.FirewallRule(id=r.id, port=2222), update_mask=mask("port")))
    assert (r2.port, r2.port_end, list(r2.cidrs)) == (2222, 2222, ["192.0.2.0/24"])
    e.wait_active(e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest(id=r.id))
    with pytest.raises(grpc.RpcError) as err:
        e.call(e.firewall.UpdateFirewallRule, epb.UpdateFirewallRuleRequest(
            firewall_rule=epb.FirewallRule(id=r.id, protocol="icmp", icmp_type=300),
            update_mask=mask("protocol", "icmp_type")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Deletes go as deltas too, and close the path.
    e.call(e.forwards.DeletePortForward, epb.DeletePortForwardRequest(id=f2.id))
    t.api.wait_router_active(net.router_id)
    if on_host(cloud):
        assert [(r.kind, r.id) for r in read_journal(journal)[-1].removed] == [
            ("portforward", f2.id)]
    assert ask(inet, TCP, ip.ip, 81, timeout=1) == ""
    assert ask(inet, TCP, ip.ip, 80) == "g2"


def test_static_nat_and_firewall_counters_count_their_own_traffic(cloud, site):
    t, net, (p1,), (_g1,) = setup_net(site, 1)
    e = Edge(t)
    counters = erpc.EdgeCounterServiceStub(t.api.channel)
    eip = e.public_ip(net.id)
    nat = e.static_nat(eip.id, p1.id)
    icmp = e.rule(direction=INGRESS, public_ip_id=eip.id, protocol="icmp", icmp_type=8,
                  icmp_code=-1)
    ssh = e.rule(direction=INGRESS, public_ip_id=eip.id, protocol="tcp", port=22)
    for obj, get, req in ((nat, e.nats.GetStaticNat, epb.GetStaticNatRequest),
                          (icmp, e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest),
                          (ssh, e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest)):
        e.wait_active(get, req(id=obj.id))
    # Three echo requests: one ICMP "connection", its replies established.
    assert in_ns(cloud.inet_ns, ["busybox", "ping", "-c3", "-i", "0.2", "-W2",
                                 eip.ip]).returncode == 0
    got = {c.id: c for c in e.call(counters.GetEdgeCounters, epb.GetEdgeCountersRequest(
        network_id=net.id)).counters}
    assert got[icmp.id].kind == "firewall"
    assert got[icmp.id].packets >= 1
    assert got[ssh.id].packets == 0
    # In and out; on a VM router the connection's first packet only.
    assert got[nat.id].kind == "staticnat"
    assert got[nat.id].packets >= (6 if on_host(cloud) else 1)


def test_counters_are_read_from_the_router_on_either_backend(cloud, site,
                                                             servers):
    """Namespace routers through the host's agent, VM routers through their
    own agent (the VM backend's authenticated channel)."""
    t, net, (p1, p2), (g1, _) = setup_net(site, 2)
    e = Edge(t)
    counters = erpc.EdgeCounterServiceStub(t.api.channel)
    ip = e.public_ip(net.id)
    serve(servers, g1, TCP, 8080, "g1")
    f1 = e.forward(public_ip_id=ip.id, protocol=TCP, public_port=80, port_id=p1.id,
                   private_port=8080)
    f2 = e.forward(public_ip_id=ip.id, protocol=TCP, public_port=81, port_id=p2.id,
                   private_port=8080)
    for f in (f1, f2):
        e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f.id))
    for _ in range(3):
        assert ask(cloud.inet_ns, TCP, ip.ip, 80) == "g1"
    got = {c.id: c for c in e.call(counters.GetEdgeCounters, epb.GetEdgeCountersRequest(
        network_id=net.id, ids=[f1.id, f2.id])).counters}
    # At least each connection's first packet (the appliance's kernel counts
    # only those; a host kernel counts every inbound packet).
    assert got[f1.id].packets >= 3
    assert got[f1.id].bytes > 0
    assert got[f2.id].packets == 0
    assert got[f2.id].bytes == 0
