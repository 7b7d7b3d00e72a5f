"""`explain` (the model) agrees with live packets on a table of flows."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid

import grpc
import pytest
from cloudnet.netmgr.v1 import debug_pb2
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc
from cloudnet.netmgr.v1 import vpn_pb2 as vnpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vnrpc

from aio.allinone import INET_DNS_IP, INET_HOST_IP, WEB_PORT
from aio.demo import Api
from aio.nsguest import NamespaceGuest
from tests.lib.allinone import Tenant
from tests.lib.diag import Debug
from tests.lib.edge import Edge
from tests.lib.explain_live import send_traced
from tests.lib.guest_servers import TCP, ask, serve
from tests.lib.vpc import Vpc

pytestmark = pytest.mark.integration

# One router per kind for the module (a VM boot under TCG each on the VM
# backend): the network tests share the module's network (its own ports,
# public IP and rules each; tests/fixtures/edge.py: site), the VPC tests the
# module's VPC (a tier of its own each, removed after: ``vpc`` below).
SITE_CIDR = "10.8.0.0/24"
VPC_CIDR = "10.63.0.0/16"


@pytest.fixture(scope="module")
def module_vpc(cloud):
    t = Tenant(cloud, f"x{uuid.uuid4().hex[:7]}")
    try:
        v = Vpc(t, "explain", VPC_CIDR)
        yield v
        with contextlib.suppress(grpc.RpcError):
            v.delete()
    finally:
        t.close()


@pytest.fixture
def vpc(module_vpc):
    """The module's VPC; what the test added to it (static routes, private
    gateways, tiers with their rules) is gone after it."""
    v = module_vpc
    yield v
    for route in v.call(v.routes.ListStaticRoutes, vpb.ListStaticRoutesRequest(
            vpc_id=v.vpc.id)).static_routes:
        v.call(v.routes.DeleteStaticRoute, vpb.DeleteStaticRouteRequest(id=route.id))
    for pg in v.call(v.gateways.ListPrivateGateways, vpb.ListPrivateGatewaysRequest(
            vpc_id=v.vpc.id)).private_gateways:
        v.call(v.gateways.DeletePrivateGateway, vpb.DeletePrivateGatewayRequest(id=pg.id))
    for tier_id in v.call(v.stub.GetVpc, vpb.GetVpcRequest(id=v.vpc.id)).tier_ids:
        v.call(v.t.api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=tier_id, force=True))
    # (Not waited for here: the next test waits for the router before it looks.)


def _ok(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


def test_explain_agrees_with_live_probes(cloud, site):
    t, net = site.t, site.net
    p1 = t.port(net.id, hostname="web1")
    p2 = t.port(net.id, hostname="web2")
    t.api.wait_router_active(net.router_id)
    g1, g2 = t.guest(net, p1), t.guest(net, p2)
    g1.dhcp()
    g2.dhcp()
    server = g1.popen(["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo hi"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while ":80 " not in g1.run(["ss", "-Htln"]).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        e = Edge(t)
        pip = e.public_ip(net.id).ip
        ip_id = next(i.id for i in e.call(e.ips.ListPublicIps,
                                          epb.ListPublicIpsRequest()).public_ips if i.ip == pip)
        f = e.forward(public_ip_id=ip_id, protocol="tcp", public_port=8080, port_id=p1.id,
                      private_port=80)
        e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f.id))
        inet = ["ip", "netns", "exec", cloud.inet_ns]

        def curl_from_inet(ip: str, port: int) -> bool:
            return _ok([*inet, "socat", "-T2", "-", f"TCP:{ip}:{port},connect-timeout=2"])

        cases = [
            # (from, to, expected decider kind, live check)
            (p1.id, f"{INET_HOST_IP}:{WEB_PORT}/tcp", "egress-default",
             lambda: g1.run(["curl", "-s", "--max-time", "3",
                             f"http://{INET_HOST_IP}:{WEB_PORT}/"]).returncode == 0),
            ("internet", f"{pip}:8080/tcp", "portforward", lambda: curl_from_inet(pip, 8080)),
            ("internet", f"{pip}:9090/tcp", "firewall-default", lambda: curl_from_inet(pip, 9090)),
            ("internet", f"{net.source_nat_ip}:80/tcp", "firewall-default",
             lambda: curl_from_inet(net.source_nat_ip, 80)),
            ("internet", f"{p1.ip}:80/tcp", "network", lambda: curl_from_inet(p1.ip, 80)),
            (p1.id, f"{net.gateway}:53/udp", "router",
             lambda: g1.run(["dig", "+short", "+time=2", "+tries=1", f"@{net.gateway}",
                             f"web2.{net.domain}"]).stdout.strip() == p2.ip),
            (p1.id, f"{net.gateway}:22/tcp", "firewall-default",
             lambda: g1.run(["nc", "-z", "-w", "2", net.gateway, "22"]).returncode == 0),
            (p2.id, f"{p1.ip}:80/tcp", "network",
             lambda: g2.run(["nc", "-z", "-w", "2", p1.ip, "80"]).returncode == 0),
        ]
        stub = Debug(t).stub

        def check(cases) -> None:
            disagree = []
            for src, to, kind, live in cases:
                r = t.api.call(stub.Explain, debug_pb2.ExplainRequest(**{"from": src, "to": to}))
                seen = live()
                if r.allowed != seen or r.decided_by_kind != kind:
                    disagree.append((src, to, r.allowed, r.decided_by_kind, r.reason, seen))
            assert not disagree

        check(cases)
        # Egress denied by default, one rule opens the web port: the rule decides.
        e.call(e.firewall.SetEgressPolicy, epb.SetEgressPolicyRequest(policy=epb.EgressPolicy(
            network_id=net.id, default_action=epb.EGRESS_ACTION_DENY)))
        allow = e.rule(direction=epb.FIREWALL_DIRECTION_EGRESS, network_id=net.id,
                       protocol="tcp", port=WEB_PORT)
        e.wait_active(e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest(id=allow.id))
        t.api.wait_router_active(net.router_id)
        check([
            (p1.id, f"{INET_HOST_IP}:{WEB_PORT}/tcp", "firewall",
             lambda: g1.run(["curl", "-s", "--max-time", "3",
                             f"http://{INET_HOST_IP}:{WEB_PORT}/"]).returncode == 0),
            # Hairpin through the public address: egress rules are not consulted.
            (p2.id, f"{pip}:8080/tcp", "portforward",
             lambda: g2.run(["socat", "-T2", "-", f"TCP:{pip}:8080,connect-timeout=2"],
                            ).returncode == 0),
            # Denied by the network's egress policy: the network decides.
            (p1.id, f"{INET_DNS_IP}:53/udp", "network",
             lambda: g1.run(["dig", "+short", "+time=2", "+tries=1", f"@{INET_DNS_IP}",
                             "www.example.test"]).stdout.strip() == INET_HOST_IP),
        ])
        r = t.api.call(stub.Explain, debug_pb2.ExplainRequest(
            **{"from": p1.id, "to": f"{INET_HOST_IP}:{WEB_PORT}/tcp"}))
        assert r.decided_by_id == allow.id
    finally:
        server.kill()
        server.wait(5)


# ---- the three paths explain used to get wrong, against packets and traces


def _explain(t, src: str, to: str) -> debug_pb2.ExplainResponse:
    return t.api.call(Debug(t).stub.Explain, debug_pb2.ExplainRequest(**{"from": src, "to": to}))


def _steps(r: debug_pb2.ExplainResponse) -> list[tuple[str, str]]:
    return [(s.object_kind, s.object_id) for s in r.steps]


def test_a_load_balancer_is_open_as_the_router_opens_it(cloud, site, servers):
    t, net = site.t, site.net
    p1 = t.port(net.id, hostname="lbm1")
    t.api.wait_router_active(net.router_id)
    g1 = t.guest(net, p1)
    g1.dhcp()
    serve(servers, g1, TCP, 8080, "member1")
    e = Edge(t)
    ip = e.public_ip(net.id)
    lb = e.call(e.lbs.CreateLoadBalancer, epb.CreateLoadBalancerRequest(
        load_balancer=epb.LoadBalancer(
            public_ip_id=ip.id, public_port=80, private_port=8080, protocol="tcp",
            source_cidrs=[f"{INET_HOST_IP}/32"],
            members=[epb.LoadBalancerMember(port_id=p1.id)])))
    e.wait_active(e.lbs.GetLoadBalancer, epb.GetLoadBalancerRequest(id=lb.id))
    t.api.wait_router_active(net.router_id)

    r = _explain(t, INET_HOST_IP, f"{ip.ip}:80/tcp")
    live = send_traced(Debug(t), net.router_id, cloud.inet_ns, INET_HOST_IP, "tcp", ip.ip, 80)
    assert live.allowed, live.describe()
    assert live.answered, live.describe()
    assert ("loadbalancer", lb.id) in live.objects, live.describe()
    assert r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("loadbalancer", lb.id)
    assert ask(cloud.inet_ns, TCP, ip.ip, 80) == "member1"
    # The port next to it: nothing listens, the edge drops it.
    r = _explain(t, INET_HOST_IP, f"{ip.ip}:81/tcp")
    live = send_traced(Debug(t), net.router_id, cloud.inet_ns, INET_HOST_IP, "tcp", ip.ip, 81)
    assert not live.allowed, live.describe()
    assert live.drop == ("firewall-default", "drop"), live.describe()
    assert not r.allowed
    assert (r.decided_by_kind, r.decided_by_id) == live.drop


VPN_PSK = "explain-Tunnel.key_0123456789"
DEAD_PEER = "203.0.113.5"  # in the public network, outside the pool: nothing answers
DEAD_PEER_NET, DEAD_PEER_HOST = "172.16.9.0/24", "172.16.9.20"


def _vpn_connection(t, vpn, gw, name: str, peer: str, cidrs: list[str], passive: bool):
    cgw = t.api.call(vpn.CreateCustomerGateway, vnpb.CreateCustomerGatewayRequest(
        customer_gateway=vnpb.CustomerGateway(
            name=name, peer_address=peer, peer_cidrs=cidrs, psk=VPN_PSK,
            ike_version=vnpb.IKE_VERSION_2, ike_proposals=["aes256gcm16-prfsha384-ecp384"],
            esp_proposals=["aes256gcm16-ecp384"], dpd_delay_seconds=2)))
    return t.api.call(vpn.CreateVpnConnection, vnpb.CreateVpnConnectionRequest(
        vpn_connection=vnpb.VpnConnection(vpn_gateway_id=gw.id, customer_gateway_id=cgw.id,
                                          passive=passive)))


def _vpn_state(t, vpn, conn_id: str) -> vnpb.VpnConnection:
    return t.api.call(vpn.GetVpnConnection, vnpb.GetVpnConnectionRequest(id=conn_id))


def _wait_vpn(t, vpn, conn_id: str, up: bool, timeout: float = 90) -> vnpb.VpnConnection:
    deadline = time.monotonic() + timeout
    while True:
        c = _vpn_state(t, vpn, conn_id)
        s = c.status
        is_up = s.ike_state == "ESTABLISHED" and any(ch.state == "INSTALLED"
                                                     for ch in s.child_sas)
        if is_up == up and s.ike_state:
            return c
        assert time.monotonic() < deadline, f"{conn_id} not {'up' if up else 'down'}: {c}"
        time.sleep(0.5)


def test_a_vpn_peers_network_is_reached_through_the_tunnel_or_not_at_all(site, cloud):
    # Site A: the module's network; site B: a network of its own (removed after).
    t, a = site.t, site.net
    vpn = vnrpc.VpnServiceStub(t.api.channel)
    b = t.network(name="site-b", cidr="10.62.0.0/24")
    pa, pb_ = t.port(a.id, hostname="va"), t.port(b.id, hostname="vb")
    t.api.wait_router_active(a.router_id)
    t.api.wait_router_active(b.router_id)
    ga = t.api.call(vpn.CreateVpnGateway, vnpb.CreateVpnGatewayRequest(
        vpn_gateway=vnpb.VpnGateway(network_id=a.id)))
    gb = t.api.call(vpn.CreateVpnGateway, vnpb.CreateVpnGatewayRequest(
        vpn_gateway=vnpb.VpnGateway(network_id=b.id)))
    to_b = _vpn_connection(t, vpn, ga, "to-b", gb.public_ip, [b.cidr], False)
    _vpn_connection(t, vpn, gb, "to-a", ga.public_ip, [a.cidr], True)
    dead = _vpn_connection(t, vpn, ga, "dead", DEAD_PEER, [DEAD_PEER_NET], False)
    _wait_vpn(t, vpn, to_b.id, up=True)
    _wait_vpn(t, vpn, dead.id, up=False)
    t.api.wait_router_active(a.router_id)
    guest_a, guest_b = t.guest(a, pa), t.guest(b, pb_)
    guest_a.dhcp()
    guest_b.dhcp()
    dbg = Debug(t)

    # Up: through the tunnel, the guest's own address arrives (no source NAT).
    r = _explain(t, pa.id, f"{pb_.ip}/icmp")
    live = send_traced(dbg, a.router_id, guest_a.netns, pa.ip, "icmp", pb_.ip, 0)
    assert live.allowed, live.describe()
    assert live.answered, live.describe()
    assert not live.snat, live.describe()
    assert r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("vpnconnection", to_b.id)
    assert not [k for k, _ in _steps(r) if k in ("snat", "staticnat")], _steps(r)
    # Down: the router drops it rather than send it in clear through source NAT.
    r = _explain(t, pa.id, f"{DEAD_PEER_HOST}/icmp")
    live = send_traced(dbg, a.router_id, guest_a.netns, pa.ip, "icmp", DEAD_PEER_HOST, 0)
    assert not live.allowed, live.describe()
    assert live.drop is not None, live.describe()
    assert not live.snat, live.describe()
    assert not r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("vpnconnection", dead.id)
    assert not [k for k, _ in _steps(r) if k in ("snat", "staticnat")], _steps(r)


def test_a_port_forward_into_a_tier_is_dropped_by_the_tiers_acl(vpc, cloud, servers):
    v = vpc
    t = v.t
    acl = v.acl("web-in")
    deny = v.rule(acl.id, 10, "deny", "ingress", "tcp", port=80, cidrs=[f"{INET_HOST_IP}/32"])
    v.rule(acl.id, 20, "allow", "ingress", "all")
    web = v.tier("pf-web", "10.63.1.0/24", acl_id=acl.id)
    pw, gw = v.guest(web, "pfw1")
    serve(servers, gw, TCP, 80, "web80")
    serve(servers, gw, TCP, 81, "web81")
    e = Edge(t)
    ip = e.public_ip(web.id)
    fwd = {port: e.forward(public_ip_id=ip.id, protocol="tcp", public_port=8000 + port,
                           port_id=pw.id, private_port=port) for port in (80, 81)}
    for f in fwd.values():
        e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f.id))
    v.wait()
    dbg = Debug(t)

    r = _explain(t, INET_HOST_IP, f"{ip.ip}:8080/tcp")
    live = send_traced(dbg, v.vpc.router_id, cloud.inet_ns, INET_HOST_IP, "tcp", ip.ip, 8080)
    assert not live.allowed, live.describe()
    assert not live.answered, live.describe()
    assert live.drop == ("aclrule", deny.id), live.describe()
    assert not r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("aclrule", deny.id)
    # The list's next rule lets the other forward in.
    r = _explain(t, INET_HOST_IP, f"{ip.ip}:8081/tcp")
    live = send_traced(dbg, v.vpc.router_id, cloud.inet_ns, INET_HOST_IP, "tcp", ip.ip, 8081)
    assert live.allowed, live.describe()
    assert live.answered, live.describe()
    assert r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("portforward", fwd[81].id)
    assert (r.decided_by_kind, r.decided_by_id) in live.objects, live.describe()
    assert ask(cloud.inet_ns, TCP, ip.ip, 8081) == "web81"


def test_a_private_gateway_and_a_static_route_as_the_router_routes_them(vpc, cloud, servers):
    v = vpc
    t = v.t
    web = v.tier("dc-web", "10.63.2.0/24")
    pw, gw = v.guest(web, "dcw1")
    # The datacenter's VLAN is the provider's to name: the admin, acting as the tenant.
    admin = Api(cloud.listen, cloud.admin_token, tenant=t.tenant.id)
    try:
        pg = admin.call(vrpc.PrivateGatewayServiceStub(admin.channel).CreatePrivateGateway,
                        vpb.CreatePrivateGatewayRequest(private_gateway=vpb.PrivateGateway(
                            vpc_id=v.vpc.id, vlan_id=3002, address="192.168.78.2/24",
                            gateway="192.168.78.1")))
    finally:
        admin.close()
    route = v.call(v.routes.CreateStaticRoute, vpb.CreateStaticRouteRequest(
        static_route=vpb.StaticRoute(vpc_id=v.vpc.id, cidr="10.211.0.0/16",
                                     next_hop="192.168.78.1")))
    v.wait()
    # The datacenter: a namespace on the gateway's VLAN with 10.211.0.1 behind it.
    dc = NamespaceGuest(f"{cloud.prefix}-xdc-{pg.id[:6]}", cloud.fabric,
                        f"xd{pg.id.replace('-', '')[:10]}")
    t.guests.append(dc)
    dc.attach(3002, "02:00:5e:10:20:31")
    for cmd in (["ip", "addr", "add", "192.168.78.1/24", "dev", "eth0"],
                ["ip", "addr", "add", "10.211.0.1/16", "dev", "lo"],
                # Sent from the address behind the gateway, not the link's.
                ["ip", "route", "add", VPC_CIDR, "via", "192.168.78.2", "src",
                 "10.211.0.1"]):
        assert dc.run(cmd).returncode == 0, cmd
    serve(servers, dc, TCP, 9100, "datacenter")
    dbg = Debug(t)

    r = _explain(t, pw.id, "10.211.0.1:9100/tcp")
    live = send_traced(dbg, v.vpc.router_id, gw.netns, pw.ip, "tcp", "10.211.0.1", 9100)
    assert live.allowed, live.describe()
    assert live.answered, live.describe()
    assert not live.snat, live.describe()
    assert r.allowed, r.reason
    assert ("staticroute", route.id) in _steps(r)
    assert not [k for k, _ in _steps(r) if k in ("snat", "staticnat")]
    # From the datacenter back into the tier.
    r = _explain(t, "10.211.0.1", f"{pw.ip}/icmp")
    live = send_traced(dbg, v.vpc.router_id, dc.netns, "10.211.0.1", "icmp", pw.ip, 0)
    assert live.traced, live.describe()
    assert live.allowed, live.describe()
    assert r.allowed, r.reason
    assert r.router_id == v.vpc.router_id
    # Nothing from the datacenter goes out to the internet through the VPC.
    assert dc.run(["ip", "route", "add", "default", "via", "192.168.78.2", "src",
                   "10.211.0.1"]).returncode == 0
    r = _explain(t, "10.211.0.1", f"{INET_HOST_IP}:{WEB_PORT}/tcp")
    live = send_traced(dbg, v.vpc.router_id, dc.netns, "10.211.0.1", "tcp", INET_HOST_IP,
                       WEB_PORT)
    assert not live.allowed, live.describe()
    assert not r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == live.drop
    # The gateway's own list: default_deny stops new flows, named by the list.
    deny = v.builtin("default_deny")
    v.call(v.acls.ReplaceNetworkAcl, vpb.ReplaceNetworkAclRequest(network_id=pg.id,
                                                                  acl_id=deny))
    v.wait()
    r = _explain(t, pw.id, "10.211.0.1:9100/tcp")
    live = send_traced(dbg, v.vpc.router_id, gw.netns, pw.ip, "tcp", "10.211.0.1", 9100)
    assert not live.allowed, live.describe()
    assert live.drop == ("acl-default-deny", deny), live.describe()
    assert not r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == live.drop
