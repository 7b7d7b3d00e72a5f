"""IPv6 through a real router: router advertisements and DHCPv6 by dnsmasq to
real clients (the kernel's SLAAC, ``dhclient -6``), AAAA and PTR answered over
IPv6, guests' traffic routed unNATed to an 'internet' host (which sees their
own addresses), and nothing from there reaching a guest until a guest
ingress rule allows it. One topology for the module:

    g1 (SLAAC, seg 100) ─┐                      ┌─ seg 0 ─ up (edge) ─ inet
    g2 (DHCPv6, seg 101) ┴─ router (g-net1, g-net2, pub0) ┘  routes each /64 to the router
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc, edge_pb2_grpc
from cloudnet.router.v1 import edge_pb2 as epb
from cloudnet.router.v1 import routing_pb2 as rpb

from common.fabric.linuxbridge import LinuxBridgeFabric
from netmgr.model.ipv6_rules import eui64
from router.agent.registry import RouterRegistry
from router.agent.server import create_server
from router.services.nftables.routed import GUEST_INGRESS
from tests.lib.routerlab import (
    DOMAIN,
    HOSTS,
    PUBLIC_GW,
    PUBLIC_IP,
    InProcessAgent,
    Topology,
    make_config,
    sh,
    wait_for,
)

pytestmark = pytest.mark.integration

NET1_V6, NET2_V6 = "2001:db8:10::/64", "2001:db8:20::/64"
GW1_V6, GW2_V6 = "2001:db8:10::1", "2001:db8:20::1"
PUBLIC6, EDGE6 = "2001:db8:ffff::/64", "2001:db8:ffff::1"
PUB_MAC = "02:00:00:00:00:10"
ROUTER6 = eui64(PUB_MAC, PUBLIC6)
INET6, INET6_GW = "2001:db8:beef::10", "2001:db8:beef::1"
G2_MAC, G2_V6 = "02:aa:00:00:00:22", "2001:db8:20::100"
G1_V6 = eui64(HOSTS["p1"][0], NET1_V6)
HTTP_PORT, HTTP4_PORT = 8080, 8081
ROUTED_NET, G3_MAC, G3_IP = "198.18.0.0/24", "02:aa:00:00:00:33", "198.18.0.33"
INET4, INET4_GW = "198.51.100.10", "198.51.100.1"


def router_config(router_id: str, generation: int,
                  ingress: list[rpb.GuestIngressRule] | None = None) -> pb.RouterConfig:
    cfg = make_config(router_id, generation, ["p1"])
    net1 = cfg.guest_networks[0]
    net1.ipv6_cidr, net1.ipv6_gateway, net1.ipv6_mode = NET1_V6, GW1_V6, "slaac"
    net1.hosts[0].ipv6 = G1_V6
    cfg.interfaces.append(pb.Interface(
        name="g-net2", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:02",
        addresses=["10.20.0.1/24"], segment_id=101, network_id="net2"))
    cfg.guest_networks.append(pb.GuestNetwork(
        network_id="net2", interface="g-net2", cidr="10.20.0.0/24", gateway="10.20.0.1",
        domain=f"net2.{DOMAIN}", lease_seconds=3600, ipv6_cidr=NET2_V6, ipv6_gateway=GW2_V6,
        ipv6_mode="dhcpv6_stateful",
        hosts=[pb.DhcpHost(port_id="p22", mac=G2_MAC, ip="10.20.0.22", hostname="vm22",
                           ipv6=G2_V6)]))
    # A routed IPv4 network: no source NAT, its guests reached by their own address.
    cfg.interfaces.append(pb.Interface(
        name="g-net3", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:03",
        addresses=["198.18.0.1/24"], segment_id=102, network_id="net3"))
    cfg.guest_networks.append(pb.GuestNetwork(
        network_id="net3", interface="g-net3", cidr=ROUTED_NET, gateway="198.18.0.1",
        domain=f"net3.{DOMAIN}", lease_seconds=3600, routed=True,
        hosts=[pb.DhcpHost(port_id="p33", mac=G3_MAC, ip=G3_IP, hostname="vm33")]))
    cfg.ipv6_uplink.CopyFrom(rpb.Ipv6Uplink(address=f"{ROUTER6}/64", gateway=EDGE6))
    cfg.guest_ingress_rules.extend(ingress or [])
    return cfg


@dataclass
class Lab:
    topo: Topology
    agent: InProcessAgent
    router_id: str
    g1: str
    g2: str
    g3: str
    inet: str


def _guest(topo: Topology, name: str, segment: int, mac: str) -> str:
    ns = topo.ns(name)
    # Addresses usable at once (no duplicate address detection wait).
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0")
    topo.fabric.plug(f"{topo.prefix}{name}"[:15], segment, ns, "eth0", mac)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    return ns


def _edge(topo: Topology) -> str:
    """The provider edge: routes each /64 to the router, forwards to inet."""
    up, inet = topo.ns("up"), topo.ns("inet")
    for ns in (up, inet):
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0")
    topo.fabric.plug(f"{topo.prefix}up"[:15], 0, up, "eth0", "02:00:00:00:ff:01")
    sh("ip", "-n", up, "addr", "add", f"{PUBLIC_GW}/24", "dev", "eth0")
    sh("ip", "-n", up, "-6", "addr", "add", f"{EDGE6}/64", "dev", "eth0")
    sh("ip", "-n", up, "link", "add", "inet0", "type", "veth", "peer", "name", "eth0",
       "netns", inet)
    sh("ip", "-n", up, "-6", "addr", "add", f"{INET6_GW}/64", "dev", "inet0")
    sh("ip", "-n", up, "link", "set", "inet0", "up")
    sh("ip", "-n", inet, "-6", "addr", "add", f"{INET6}/64", "dev", "eth0")
    sh("ip", "-n", inet, "link", "set", "eth0", "up")
    sh("ip", "-n", inet, "link", "set", "lo", "up")
    sh("ip", "-n", inet, "-6", "route", "add", "default", "via", INET6_GW)
    sh("ip", "netns", "exec", up, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
    for net in (NET1_V6, NET2_V6):
        sh("ip", "-n", up, "-6", "route", "add", net, "via", ROUTER6, "dev", "eth0")
    sh("ip", "-n", up, "addr", "add", f"{INET4_GW}/24", "dev", "inet0")
    sh("ip", "-n", inet, "addr", "add", f"{INET4}/24", "dev", "eth0")
    sh("ip", "-n", inet, "route", "add", "default", "via", INET4_GW)
    sh("ip", "netns", "exec", up, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    sh("ip", "-n", up, "route", "add", ROUTED_NET, "via", PUBLIC_IP)
    return inet


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    prefix = f"v6{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    state_dir = tempfile.mkdtemp(prefix="cn-router-v6-", dir="/tmp")
    os.chmod(state_dir, 0o755)
    fabric = LinuxBridgeFabric(f"{prefix}-fab")
    topo = Topology(prefix, state_dir, fabric, namespaces=[fabric.netns])
    registry = RouterRegistry(os.path.join(state_dir, "agent"), netns_prefix=prefix,
                              fabric_netns=fabric.netns, agent_id="test")
    registry.start()
    sock = f"unix://{state_dir}/agent.sock"
    server, _ = create_server(sock, registry)
    channel = grpc.insecure_channel(sock)
    agent = InProcessAgent(registry, agent_pb2_grpc.RouterAgentStub(channel), server, channel)
    router_id = uuid.uuid4().hex
    try:
        apply(agent, router_config(router_id, 1))
        g1 = _guest(topo, "g1", 100, HOSTS["p1"][0])
        g2 = _guest(topo, "g2", 101, G2_MAC)
        g3 = _guest(topo, "g3", 102, G3_MAC)
        sh("ip", "-n", g3, "addr", "add", f"{G3_IP}/24", "dev", "eth0")
        sh("ip", "-n", g3, "route", "add", "default", "via", "198.18.0.1")
        yield Lab(topo, agent, router_id, g1, g2, g3, _edge(topo))
    finally:
        channel.close()
        server.stop(grace=None)
        with contextlib.suppress(Exception):
            registry.delete(router_id, keep_leases=False)
        topo.cleanup()


def apply(agent: InProcessAgent, cfg: pb.RouterConfig) -> pb.RouterStatus:
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status
    assert status.applied_generation == cfg.generation, status.last_error
    assert [o for o in status.objects if not o.ok] == []
    return status


def global_addresses(ns: str) -> list[str]:
    out = sh("ip", "-n", ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


# dhclient -6 runs this at each event (with an environment of its own): the
# address is configured here, never by dhclient-script (which would write the
# host's /etc/resolv.conf).
DHCLIENT_SCRIPT = """#!/bin/sh
env > "{out}.$reason"
case "$reason" in
  BOUND6|REBOOT6|RENEW6)
    ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" ;;
esac
exit 0
"""


@pytest.fixture(scope="module")
def dhcpv6_lease(lab: Lab) -> dict[str, str]:
    """``dhclient -6`` once in g2: the environment of its BOUND6 event."""
    d = tempfile.mkdtemp(prefix="cn-dhclient6-", dir=lab.topo.state_dir)
    script, out = os.path.join(d, "script"), os.path.join(d, "env")
    with open(script, "w") as f:
        f.write(DHCLIENT_SCRIPT.replace("{out}", out))
    os.chmod(script, 0o755)
    # Wait for the router's RA first: DHCPv6 asks on the link it tells about.
    wait_for(lambda: "default" in sh("ip", "-n", lab.g2, "-6", "route", "show", "default"),
             timeout=30, what="a router advertisement on g2")
    run = subprocess.run(
        ["ip", "netns", "exec", lab.g2, "dhclient", "-6", "-1",
         "-v", "-sf", script, "-lf", os.path.join(d, "leases"), "-pf", os.path.join(d, "pid"),
         "eth0"], capture_output=True, text=True, timeout=60, check=False)
    assert os.path.exists(f"{out}.BOUND6"), run.stderr[-2000:]
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError), \
            open(os.path.join(d, "pid")) as f:
        os.kill(int(f.read().strip()), signal.SIGTERM)
    with open(f"{out}.BOUND6") as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)


def test_a_slaac_guest_forms_its_eui64_address_from_the_routers_advertisement(lab: Lab) -> None:
    wait_for(lambda: G1_V6 in global_addresses(lab.g1), timeout=30, what="SLAAC on g1")
    route = sh("ip", "-n", lab.g1, "-6", "route", "show", "default")
    assert "fe80::" in route  # the router's link-local address, learned from its RA
    assert G1_V6 == "2001:db8:10:0:aa:ff:fe00:11"


def test_a_dhcpv6_guest_gets_its_reserved_address(lab: Lab, dhcpv6_lease: dict[str, str]
                                                  ) -> None:
    assert dhcpv6_lease["new_ip6_address"] == G2_V6
    assert GW2_V6 in dhcpv6_lease.get("new_dhcp6_name_servers", "")
    assert G2_V6 in global_addresses(lab.g2)


def dig(ns: str, *args: str) -> list[str]:
    out = sh("ip", "netns", "exec", ns, "dig", "+time=2", "+tries=2", "+short", *args)
    return out.split()


def test_names_resolve_to_aaaa_and_back_over_ipv6(lab: Lab) -> None:
    wait_for(lambda: G1_V6 in global_addresses(lab.g1), timeout=30, what="SLAAC on g1")
    assert dig(lab.g1, f"@{GW1_V6}", "AAAA", f"vm1.{DOMAIN}") == [G1_V6]
    assert dig(lab.g1, f"@{GW1_V6}", "AAAA", f"vm22.net2.{DOMAIN}") == [G2_V6]
    assert dig(lab.g1, f"@{GW1_V6}", "-x", G2_V6) == [f"vm22.net2.{DOMAIN}."]
    # The IPv4 record is still there, asked over IPv6.
    assert dig(lab.g1, f"@{GW1_V6}", "A", f"vm1.{DOMAIN}") == [HOSTS["p1"][1]]


def http_script(lab: Lab, name: str, body: str) -> str:
    """A one-request HTTP responder for socat's EXEC (the body is shell text)."""
    path = os.path.join(lab.topo.state_dir, f"{name}.sh")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nread -r _request\nprintf 'HTTP/1.0 200 OK\\r\\n\\r\\n%s\\n' {body}\n")
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def echo_server(lab: Lab) -> Iterator[None]:
    """In inet: answers an HTTP request with the client address it saw."""
    script = http_script(lab, "echo", '"$SOCAT_PEERADDR"')
    procs = [subprocess.Popen(
        ["ip", "netns", "exec", lab.inet, "socat", f"{listen},fork,reuseaddr", f"EXEC:{script}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for listen in (f"TCP6-LISTEN:{HTTP_PORT}", f"TCP4-LISTEN:{HTTP4_PORT}")]
    try:
        for port in (HTTP_PORT, HTTP4_PORT):
            wait_for(lambda p=port: f":{p}" in sh("ip", "netns", "exec", lab.inet, "ss", "-ltn"),
                     what="the echo server")
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def curl6(ns: str, url: str, timeout: int = 5) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "curl", "-6", "-sS", "--max-time",
                           str(timeout), url], capture_output=True, text=True, timeout=30,
                          check=False)


def test_guests_reach_the_internet_from_their_own_addresses(
        lab: Lab, echo_server: None, dhcpv6_lease: dict[str, str]) -> None:
    wait_for(lambda: G1_V6 in global_addresses(lab.g1), timeout=30, what="SLAAC on g1")
    for ns, own in ((lab.g1, G1_V6), (lab.g2, G2_V6)):
        got = curl6(ns, f"http://[{INET6}]:{HTTP_PORT}/")
        assert got.returncode == 0, got.stderr
        seen = ipaddress.IPv6Address(got.stdout.strip().strip("[]"))
        assert str(seen) == own  # at the server: the guest's own address, no NAT


def test_the_internet_reaches_a_guest_only_once_an_ingress_rule_allows(
        lab: Lab, echo_server: None) -> None:
    wait_for(lambda: G1_V6 in global_addresses(lab.g1), timeout=30, what="SLAAC on g1")
    script = http_script(lab, "guest", "guest")
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.g1, "socat", f"TCP6-LISTEN:{HTTP_PORT},fork,reuseaddr",
         f"EXEC:{script}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: f":{HTTP_PORT}" in sh("ip", "netns", "exec", lab.g1, "ss", "-ltn"),
                 what="the guest's server")
        url = f"http://[{G1_V6}]:{HTTP_PORT}/"
        assert curl6(lab.inet, url, timeout=2).returncode != 0  # dropped by the router
        rule = rpb.GuestIngressRule(id="fw-web", network_id="net1", protocol="tcp",
                                    port_start=HTTP_PORT, cidrs=["2001:db8:beef::/64"])
        apply(lab.agent, router_config(lab.router_id, 2, [rule]))
        got = curl6(lab.inet, url)
        assert (got.returncode, got.stdout.strip()) == (0, "guest"), got.stderr
        # A rule for other sources opens nothing.
        other = rpb.GuestIngressRule(id="fw-other", network_id="net1", protocol="tcp",
                                     port_start=HTTP_PORT, cidrs=["2001:db8:dead::/64"])
        apply(lab.agent, router_config(lab.router_id, 3, [other]))
        assert curl6(lab.inet, url, timeout=2).returncode != 0
    finally:
        server.kill()
        server.wait()


def curl(ns: str, url: str, timeout: int = 5) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "curl", "-4", "-sS", "--max-time",
                           str(timeout), url], capture_output=True, text=True, timeout=30,
                          check=False)


def test_a_routed_guest_leaves_by_its_own_address_and_is_reached_by_it(
        lab: Lab, echo_server: None) -> None:
    got = curl(lab.g3, f"http://{INET4}:{HTTP4_PORT}/")
    assert (got.returncode, got.stdout.strip()) == (0, G3_IP), got.stderr  # no source NAT
    script = http_script(lab, "guest3", "guest3")
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.g3, "socat", f"TCP4-LISTEN:{HTTP_PORT},fork,reuseaddr",
         f"EXEC:{script}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: f":{HTTP_PORT}" in sh("ip", "netns", "exec", lab.g3, "ss", "-ltn"),
                 what="the routed guest's server")
        url = f"http://{G3_IP}:{HTTP_PORT}/"
        assert curl(lab.inet, url, timeout=2).returncode != 0  # the ingress firewall drops
        rule = rpb.GuestIngressRule(id="fw-routed", network_id="net3", protocol="tcp",
                                    port_start=HTTP_PORT, cidrs=["198.51.100.0/24"])
        apply(lab.agent, router_config(lab.router_id, 10, [rule]))
        got = curl(lab.inet, url)
        assert (got.returncode, got.stdout.strip()) == (0, "guest3"), got.stderr
    finally:
        server.kill()
        server.wait()
        apply(lab.agent, router_config(lab.router_id, 11))


def test_the_same_config_again_changes_nothing(lab: Lab) -> None:
    rt = lab.agent.agent.runtime(lab.router_id)
    pid_file = rt.ctx.paths.dnsmasq("dnsmasq.pid")
    with open(pid_file) as f:
        pid = f.read()
    current = rt.config
    assert current is not None
    before = sh("ip", "-n", rt.ctx.netns, "-6", "addr", "show")
    again = pb.RouterConfig()
    again.CopyFrom(current)
    again.generation += 1
    apply(lab.agent, again)
    with open(pid_file) as f:
        assert f.read() == pid
    assert sh("ip", "-n", rt.ctx.netns, "-6", "addr", "show") == before


def test_a_dual_stack_vpc_table_with_ipv6_acl_rules_loads(lab: Lab) -> None:
    """The kernel takes the VPC parts for IPv6: the tiers' IPv6 between them,
    an ACL rule of IPv6 sources and one of ICMPv6 (nft -c, in a namespace of
    the test's own)."""
    from tests.lib.routerconfigs import render

    cfg = router_config(lab.router_id, 1)
    cfg.vpc_id = "vpc-1"
    acl_id = "11111111-2222-4333-8444-555555555555"
    cfg.network_acls.append(pb.NetworkAcl(id=acl_id, name="l", rules=[
        pb.AclRule(id="r1", number=10, action="allow", direction="ingress", protocol="tcp",
                   port_start=443, cidrs=["2001:db8:beef::/64"]),
        pb.AclRule(id="r2", number=20, action="allow", direction="ingress", protocol="icmp",
                   icmp_type=128, icmp_code=-1, cidrs=["::/0"])]))
    for iface, net in (("g-net1", "net1"), ("g-net2", "net2")):
        cfg.tier_acls.append(pb.TierAcl(network_id=net, interface=iface, acl_id=acl_id))
    table = render("nftables", cfg)["cloudnet.nft"]
    assert "ip6 saddr @guest_nets6" in table
    path = os.path.join(lab.topo.state_dir, "vpc6.nft")
    with open(path, "w") as f:
        f.write(table)
    sh("ip", "netns", "exec", lab.topo.ns("nftc"), "nft", "-c", "-f", path)



def test_a_vpc_ipv6_static_route_carries_a_guests_connection(
        lab: Lab, dhcpv6_lease: dict[str, str]) -> None:
    """A VPC router routes a network behind a tier's guest (g2, whose server
    listens on 2001:db8:99::1) by an IPv6 static route through g2's address:
    g1 reaches that server with the route and not without."""
    behind, target = "2001:db8:99::/64", "2001:db8:99::1"
    wait_for(lambda: G1_V6 in global_addresses(lab.g1), timeout=30, what="SLAAC on g1")
    sh("ip", "-n", lab.g2, "-6", "addr", "replace", f"{target}/128", "dev", "lo", "nodad")
    rt = lab.agent.agent.runtime(lab.router_id)
    script = http_script(lab, "behind", "behind")
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.g2, "socat",
         f"TCP6-LISTEN:{HTTP_PORT},bind=[{target}],fork,reuseaddr", f"EXEC:{script}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://[{target}]:{HTTP_PORT}/"

    def vpc(generation: int, routes: list[pb.Route]) -> pb.RouterConfig:
        cfg = router_config(lab.router_id, generation)
        cfg.vpc_id = "vpc-1"
        cfg.ipv6_routes.extend(routes)
        return cfg

    try:
        wait_for(lambda: f"[{target}]:{HTTP_PORT}" in sh(
            "ip", "netns", "exec", lab.g2, "ss", "-ltn"), what="the server behind g2")
        apply(lab.agent, vpc(20, []))
        assert curl6(lab.g1, url, timeout=2).returncode != 0  # no route to it
        apply(lab.agent, vpc(21, [pb.Route(destination=behind, gateway=G2_V6,
                                           interface="g-net2")]))
        assert f"via {G2_V6} dev g-net2 proto static" in sh(
            "ip", "-n", rt.ctx.netns, "-6", "route", "show", behind)
        got = curl6(lab.g1, url)
        assert (got.returncode, got.stdout.strip()) == (0, "behind"), got.stderr
        apply(lab.agent, vpc(22, []))
        assert sh("ip", "-n", rt.ctx.netns, "-6", "route", "show", behind).strip() == ""
        assert curl6(lab.g1, url, timeout=2).returncode != 0
    finally:
        server.kill()
        server.wait()
        apply(lab.agent, router_config(lab.router_id, 23))


def test_a_guest_ingress_rule_change_goes_as_an_edge_delta(lab: Lab) -> None:
    """A guest ingress rule added and removed by edge deltas: no service of
    the router applies in full (the runtime counts applies), the rule opens
    and closes the guest to the internet host, and a full push of the
    resulting config afterwards reloads no table text."""
    wait_for(lambda: G1_V6 in global_addresses(lab.g1), timeout=30, what="SLAAC on g1")
    rt = lab.agent.agent.runtime(lab.router_id)
    edge = edge_pb2_grpc.RouterEdgeStub(lab.agent.channel)
    script = http_script(lab, "delta", "delta")
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.g1, "socat", f"TCP6-LISTEN:{HTTP_PORT},fork,reuseaddr",
         f"EXEC:{script}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://[{G1_V6}]:{HTTP_PORT}/"
    rule = rpb.GuestIngressRule(id="fw-delta", network_id="net1", protocol="tcp",
                                port_start=HTTP_PORT, cidrs=["2001:db8:beef::/64"])
    ref = epb.EdgeObjectRef(kind=GUEST_INGRESS, id=rule.id)

    def delta(base: int, **parts: object) -> epb.ApplyEdgeDeltaResponse:
        return edge.ApplyEdgeDelta(epb.ApplyEdgeDeltaRequest(delta=epb.EdgeDelta(
            router_id=lab.router_id, base_generation=base, generation=base + 1,
            removed=[ref], **parts)))  # type: ignore[arg-type]

    try:
        wait_for(lambda: f":{HTTP_PORT}" in sh("ip", "netns", "exec", lab.g1, "ss", "-ltn"),
                 what="the guest's server")
        apply(lab.agent, router_config(lab.router_id, 30))
        assert curl6(lab.inet, url, timeout=2).returncode != 0
        applies = dict(rt.service_applies)
        reply = delta(30, guest_ingress_rules=[rule])
        assert (reply.stale, reply.applied_generation) == (False, 31), reply
        got = curl6(lab.inet, url)
        assert (got.returncode, got.stdout.strip()) == (0, "delta"), got.stderr
        reply = delta(31)
        assert (reply.stale, reply.applied_generation) == (False, 32), reply
        assert curl6(lab.inet, url, timeout=2).returncode != 0
        assert rt.service_applies == applies  # no full apply of anything
        # The rule again by delta, then the same config as a full push: the
        # table text the agent keeps is the chain as the deltas left it.
        assert delta(32, guest_ingress_rules=[rule]).applied_generation == 33
        ruleset = sh("ip", "netns", "exec", rt.ctx.netns, "nft", "list", "chain", "inet",
                     "cloudnet", "guest_ingress")
        apply(lab.agent, router_config(lab.router_id, 34, [rule]))
        assert sh("ip", "netns", "exec", rt.ctx.netns, "nft", "list", "chain", "inet",
                  "cloudnet", "guest_ingress") == ruleset
        assert curl6(lab.inet, url).stdout.strip() == "delta"
    finally:
        server.kill()
        server.wait()
        apply(lab.agent, router_config(lab.router_id, 35))


def test_an_ipv6_address_removed_behind_the_agents_back_is_reported_and_repaired(
        lab: Lab) -> None:
    """The health check reads the namespace's addresses itself (one netlink
    dump): an address deleted by hand is named, and the repair puts it back."""
    rt = lab.agent.agent.runtime(lab.router_id)
    cfg = rt.config
    assert cfg is not None
    net = next(n for n in cfg.guest_networks if n.ipv6_cidr)
    prefixlen = net.ipv6_cidr.split("/")[1]
    addr = f"{net.ipv6_gateway}/{prefixlen}"
    assert "ipv6" not in rt.check_health()
    sh("ip", "-n", rt.ctx.netns, "-6", "addr", "del", addr, "dev", net.interface)
    try:
        assert "ipv6" in rt.check_health()
        ipv6 = next(s for s in rt.status().services if s.name == "ipv6")
        assert not ipv6.healthy
        assert ipv6.detail == f"missing: {addr}"
        assert "ipv6" in rt.repair()
        assert "ipv6" not in rt.check_health()
    finally:
        if "ipv6" in rt.check_health():
            sh("ip", "-n", rt.ctx.netns, "-6", "addr", "add", addr, "dev", net.interface,
               "nodad")
    assert net.ipv6_gateway in " ".join(
        sh("ip", "-n", rt.ctx.netns, "-6", "-o", "addr", "show", "dev", net.interface).split())
