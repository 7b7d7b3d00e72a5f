"""Public IPs, port forwarding, static NAT, firewall end to end: gRPC API →
store → reconciler → agent → nftables, checked with real clients (curl,
socat) from the internet host and from guests."""

from __future__ import annotations

import grpc
import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.allinone import INET_HOST_IP, WEB_PORT
from tests.lib.edge import Edge, setup_net
from tests.lib.guest_servers import TCP, UDP, ask, in_ns, serve

pytestmark = pytest.mark.integration

INGRESS, EGRESS = epb.FIREWALL_DIRECTION_INGRESS, epb.FIREWALL_DIRECTION_EGRESS


def seen_from(guest) -> str:
    r = guest.run(["curl", "-s", "--max-time", "5", f"http://{INET_HOST_IP}:{WEB_PORT}/"])
    return r.stdout.strip()


SITE_CIDR = "10.51.0.0/24"


def test_port_forwards_tcp_udp_ranges_sources_and_hairpin(cloud, site, servers):
    t, net, (p1, p2), (g1, g2) = setup_net(site, 2)
    e = Edge(t)
    ip = e.public_ip(net.id)
    assert ip.network_id == net.id
    assert not ip.source_nat
    serve(servers, g1, TCP, 8080, "g1-tcp")
    serve(servers, g1, UDP, 5353, "g1-udp")
    for port in (9000, 9001):
        serve(servers, g2, TCP, port, f"g2-{port}")
    f1 = e.forward(public_ip_id=ip.id, protocol=TCP, public_port=80, port_id=p1.id,
                   private_port=8080)
    f2 = e.forward(public_ip_id=ip.id, protocol=UDP, public_port=5000, port_id=p1.id,
                   private_port=5353)
    f3 = e.forward(public_ip_id=ip.id, protocol=TCP, public_port=7000, public_port_end=7001,
                   port_id=p2.id, private_port=9000, private_port_end=9001)
    # Only from a range the internet host is not in.
    f4 = e.forward(public_ip_id=ip.id, protocol=TCP, public_port=81, port_id=p1.id,
                   private_port=8080, source_cidrs=["192.0.2.0/24"])
    for f in (f1, f2, f3, f4):
        got = e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f.id))
        assert got.public_ip == ip.ip
        assert got.generation > 0
    inet = cloud.inet_ns
    assert ask(inet, TCP, ip.ip, 80) == "g1-tcp"
    assert ask(inet, UDP, ip.ip, 5000) == "g1-udp"
    assert ask(inet, TCP, ip.ip, 7000) == "g2-9000"
    assert ask(inet, TCP, ip.ip, 7001) == "g2-9001"
    # Not forwarded, or not from this source: dropped.
    assert ask(inet, TCP, ip.ip, 82, timeout=1) == ""
    assert ask(inet, TCP, ip.ip, 81, timeout=1) == ""
    assert ask(inet, UDP, ip.ip, 5001, timeout=1) == ""
    # Hairpin: a guest reaches another guest (and itself) through the public IP.
    assert ask(g2.netns, TCP, ip.ip, 80) == "g1-tcp"
    assert ask(g1.netns, TCP, ip.ip, 80) == "g1-tcp"
    # Removing a rule closes it.
    e.call(e.forwards.DeletePortForward, epb.DeletePortForwardRequest(id=f1.id))
    t.api.wait_router_active(net.router_id)
    assert ask(inet, TCP, ip.ip, 80, timeout=1) == ""
    assert ask(inet, UDP, ip.ip, 5000) == "g1-udp"
    listed = e.call(e.forwards.ListPortForwards, epb.ListPortForwardsRequest(network_id=net.id))
    assert {f.id for f in listed.port_forwards} == {f2.id, f3.id, f4.id}


def test_static_nat_ingress_firewall_and_outbound_address(cloud, site, servers):
    t, net, (p1, _p2), (g1, g2) = setup_net(site, 2)
    e = Edge(t)
    eip = e.public_ip(net.id)
    serve(servers, g1, TCP, 8080, "g1")
    serve(servers, g1, TCP, 8081, "g1-8081")
    nat = e.static_nat(eip.id, p1.id)
    e.wait_active(e.nats.GetStaticNat, epb.GetStaticNatRequest(id=nat.id))
    assert nat.private_ip == p1.ip
    assert nat.public_ip == eip.ip
    # Outbound from the static-NAT guest leaves from its elastic IP; the other
    # guest still uses the network's source-NAT address.
    assert seen_from(g1) == eip.ip
    assert seen_from(g2) == net.source_nat_ip
    inet = cloud.inet_ns
    # Default deny inbound until a firewall rule allows it.
    assert ask(inet, TCP, eip.ip, 8080, timeout=1) == ""
    ping = ["busybox", "ping", "-c1", "-W1", eip.ip]
    assert in_ns(inet, ping).returncode != 0
    r = e.rule(direction=INGRESS, public_ip_id=eip.id, protocol=TCP, port=8080,
               cidrs=[f"{INET_HOST_IP}/32"])
    icmp = e.rule(direction=INGRESS, public_ip_id=eip.id, protocol="icmp", icmp_type=8,
                  icmp_code=-1)
    for rule in (r, icmp):
        e.wait_active(e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest(id=rule.id))
    assert ask(inet, TCP, eip.ip, 8080) == "g1"
    assert ask(inet, TCP, eip.ip, 8081, timeout=1) == ""
    assert in_ns(inet, ping).returncode == 0
    # Hairpin to the elastic IP from the other guest (its source is allowed
    # by a rule for the network).
    e.rule(direction=INGRESS, public_ip_id=eip.id, protocol=TCP, port=8081,
           cidrs=[net.cidr])
    t.api.wait_router_active(net.router_id)
    assert ask(g2.netns, TCP, eip.ip, 8081) == "g1-8081"
    e.call(e.firewall.DeleteFirewallRule, epb.DeleteFirewallRuleRequest(id=r.id))
    t.api.wait_router_active(net.router_id)
    assert ask(inet, TCP, eip.ip, 8080, timeout=1) == ""


def test_egress_default_policy_and_rules(cloud, site):
    t, net, _, (g1,) = setup_net(site, 1)
    e = Edge(t)
    assert seen_from(g1) == net.source_nat_ip
    # Default allow + a deny rule for the web port.
    deny = e.rule(direction=EGRESS, network_id=net.id, protocol=TCP, port=WEB_PORT,
                  cidrs=[f"{INET_HOST_IP}/32"])
    e.wait_active(e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest(id=deny.id))
    assert seen_from(g1) == ""
    e.call(e.firewall.DeleteFirewallRule, epb.DeleteFirewallRuleRequest(id=deny.id))
    t.api.wait_router_active(net.router_id)
    assert seen_from(g1) == net.source_nat_ip
    # Default deny: blocked until an allow rule opens it.
    policy = e.call(e.firewall.SetEgressPolicy, epb.SetEgressPolicyRequest(
        policy=epb.EgressPolicy(network_id=net.id, default_action=epb.EGRESS_ACTION_DENY)))
    assert policy.default_action == epb.EGRESS_ACTION_DENY
    t.api.wait_router_active(net.router_id)
    assert seen_from(g1) == ""
    assert g1.run(["busybox", "ping", "-c1", "-W1", INET_HOST_IP]).returncode != 0
    allow = e.rule(direction=EGRESS, network_id=net.id, protocol=TCP, port=WEB_PORT)
    e.rule(direction=EGRESS, network_id=net.id, protocol="icmp", icmp_type=-1, icmp_code=-1,
           cidrs=["198.51.100.0/24"])
    e.wait_active(e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest(id=allow.id))
    t.api.wait_router_active(net.router_id)
    assert seen_from(g1) == net.source_nat_ip
    assert g1.run(["busybox", "ping", "-c1", "-W2", INET_HOST_IP]).returncode == 0


def test_public_ip_lifecycle_and_bad_requests_change_nothing(cloud, site, make_tenant):
    t, net, (p1,), _ = setup_net(site, 1)
    # Another tenant's network with the same CIDR: only its objects are used
    # (its router is not waited for: on VMs that would be a boot for nothing).
    other = make_tenant()
    onet = other.network(name="edge", cidr=net.cidr)
    op = other.port(onet.id, hostname="vm0")
    e, oe = Edge(t), Edge(other)
    ip = e.public_ip(net.id)
    oip = oe.public_ip(onet.id)
    e.forward(public_ip_id=ip.id, protocol=TCP, public_port=80, port_id=p1.id, private_port=80)
    t.api.wait_router_active(net.router_id)
    before = t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=net.router_id))
    bad: list[tuple[dict[str, object], grpc.StatusCode, str]] = [
        (dict(public_port=0), grpc.StatusCode.INVALID_ARGUMENT, "port_forward.public_port"),
        (dict(public_port=70000), grpc.StatusCode.INVALID_ARGUMENT, "port_forward.public_port"),
        (dict(public_port=90, public_port_end=85), grpc.StatusCode.INVALID_ARGUMENT,
         "port_forward.public_port_end"),
        (dict(public_port=90, public_port_end=95, private_port_end=81),
         grpc.StatusCode.INVALID_ARGUMENT, "port_forward.private_port_end"),
        (dict(public_port=80), grpc.StatusCode.ALREADY_EXISTS, "port_forward.public_port"),
        (dict(protocol="sctp"), grpc.StatusCode.INVALID_ARGUMENT, "port_forward.protocol"),
        (dict(source_cidrs=["10.0.0.1/8"]), grpc.StatusCode.INVALID_ARGUMENT,
         "port_forward.source_cidrs[0]"),
        (dict(public_ip_id=oip.id), grpc.StatusCode.NOT_FOUND, "public IP"),
        (dict(port_id=op.id), grpc.StatusCode.NOT_FOUND, "port"),
    ]
    for fields, code, text in bad:
        req = dict(public_ip_id=ip.id, protocol=TCP, public_port=85, port_id=p1.id,
                   private_port=80)
        req.update(fields)
        with pytest.raises(grpc.RpcError) as err:
            e.forward(**req)
        assert err.value.code() == code, fields
        assert text in err.value.details(), (fields, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        e.rule(direction=INGRESS, public_ip_id=ip.id, protocol="tcp", port=1,
               cidrs=["not-a-cidr"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=net.router_id))
    assert after.desired_generation == before.desired_generation  # nothing applied
    # An address in use cannot be released; released, it leaves the router.
    with pytest.raises(grpc.RpcError) as err:
        e.call(e.ips.ReleasePublicIp, epb.ReleasePublicIpRequest(id=ip.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    ips = e.call(e.ips.ListPublicIps, epb.ListPublicIpsRequest())
    assert {i.ip for i in ips.public_ips} == {ip.ip, net.source_nat_ip}
