"""Router diagnostics end to end: netmgr DebugService → router agent → real
packets (tcpdump, scapy, dnslib, nft trace), checked with scapy, tshark and
the guests' own clients."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time

import grpc
import pytest
from cloudnet.router.v1 import diag_pb2 as dpb
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.utils import rdpcap

from aio.allinone import EDGE_PUBLIC_IP, INET_HOST_IP, WEB_PORT
from router.runtime import router_netns_name
from tests.lib.diag import Background, Debug, pcap_bytes, summary

pytestmark = pytest.mark.integration


# Probes from a tenant network plug a probe port into its segment: a router
# VM has no switch inside to plug one into (the agent says so: see
# test_probe_ports_on_a_router_vm_are_refused_clearly).
PROBE_PORT_ONLY = pytest.mark.netns_only("probe port on the tenant segment (netns backend only)")


@pytest.fixture(scope="module")
def lab(cloud):
    """One tenant network with two ports, a guest holding its lease."""
    from tests.lib.allinone import Tenant

    t = Tenant(cloud, "diaglab")
    net = t.network(name="lab", cidr="10.7.0.0/24")
    p1 = t.port(net.id, hostname="vm1")
    p2 = t.port(net.id, hostname="vm2", ip="10.7.0.20")
    t.api.wait_router_active(net.router_id)
    yield t, net, p1, p2
    t.close()


def _dhcp_type(pkt) -> int:
    for opt in pkt[DHCP].options:
        if isinstance(opt, tuple) and opt[0] == "message-type":
            return int(opt[1])
    return 0


def test_capture_of_a_guests_dhcp_exchange(lab, tmp_path):
    t, net, p1, _ = lab
    dbg = Debug(t)
    bg = Background(dbg.capture(dpb.CaptureRequest(
        router_id=net.router_id, interface=dpb.InterfaceRef(network_id=net.id),
        filter="udp port 67 or udp port 68", max_packets=4, max_seconds=30)))
    assert bg.started.wait(30)
    g = t.guest(net, p1)
    assert g.dhcp().ip == p1.ip
    chunks = bg.join()
    assert bg.error is None, bg.error
    s = summary(chunks)
    assert s.packets == 4
    assert s.stopped_by == "packets"
    data = pcap_bytes(chunks)
    assert s.bytes == len(data)
    packets = rdpcap(io.BytesIO(data))
    assert len(packets) == 4
    types = {(_dhcp_type(p), p[BOOTP].chaddr[:6].hex(":")) for p in packets if DHCP in p}
    mac = p1.mac.lower()
    assert (1, mac) in types  # DISCOVER from the guest
    offers = [p for p in packets if DHCP in p and _dhcp_type(p) == 2]
    assert offers
    assert offers[0][BOOTP].yiaddr == p1.ip
    if shutil.which("tshark"):
        path = tmp_path / "dhcp.pcap"
        path.write_bytes(data)
        out = subprocess.run(["tshark", "-r", str(path), "-Y", "dhcp"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "DHCP Offer" in out.stdout


def test_capture_limits_are_enforced_by_the_agent(lab):
    t, net, _, _ = lab
    dbg = Debug(t)
    # The byte limit: stop before a record that would pass it; the pcap stays valid.
    bg = Background(dbg.capture(dpb.CaptureRequest(
        router_id=net.router_id, interface=dpb.InterfaceRef(public=True), filter="icmp",
        max_packets=1000, max_bytes=24 + 3 * (16 + 98), max_seconds=60)))
    assert bg.started.wait(30)
    r = dbg.probe(net.router_id, ping=dpb.PingProbe(destination=EDGE_PUBLIC_IP, count=4))
    assert r.ok
    chunks = bg.join()
    s = summary(chunks)
    assert s.stopped_by == "bytes"
    assert s.bytes <= 24 + 3 * (16 + 98)
    assert len(rdpcap(io.BytesIO(pcap_bytes(chunks)))) == s.packets
    # The time limit: nothing matches, the agent ends the stream itself.
    chunks = list(dbg.capture(dpb.CaptureRequest(
        router_id=net.router_id, interface=dpb.InterfaceRef(public=True),
        filter="udp port 9", max_seconds=1)))
    assert summary(chunks).stopped_by == "seconds"
    assert summary(chunks).packets == 0


@pytest.mark.parametrize(("req", "field"), [
    (dict(filter="udp port banana"), "filter"),
    (dict(filter="-w /tmp/x"), "filter"),
    (dict(max_packets=10**9), "max_packets"),
    (dict(max_seconds=86400), "max_seconds"),
    (dict(max_bytes=1 << 40), "max_bytes"),
    (dict(interface=dpb.InterfaceRef(network_id="n-00000000000000000000000000000000")),
     "interface.network_id"),
])
def test_bad_capture_requests_name_the_field(lab, req, field):
    t, net, _, _ = lab
    fields = dict(router_id=net.router_id, interface=dpb.InterfaceRef(network_id=net.id))
    fields.update(req)
    with pytest.raises(grpc.RpcError) as e:
        list(Debug(t).capture(dpb.CaptureRequest(**fields)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in e.value.details()


def test_another_tenant_cannot_capture_trace_or_show(lab, make_tenant):
    _, net, _, _ = lab
    other = Debug(make_tenant())
    for call in (
        lambda: list(other.capture(dpb.CaptureRequest(
            router_id=net.router_id, interface=dpb.InterfaceRef(public=True)))),
        lambda: list(other.trace(dpb.TraceRequest(router_id=net.router_id, protocol="icmp"))),
        lambda: other.show(net.router_id, dpb.SHOW_KIND_LEASES),
        lambda: other.probe(net.router_id, ping=dpb.PingProbe(destination=INET_HOST_IP)),
    ):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_streams_need_a_token(cloud, lab):
    _, net, _, _ = lab
    from cloudnet.netmgr.v1 import debug_pb2_grpc

    with grpc.insecure_channel(cloud.listen) as ch:
        stub = debug_pb2_grpc.DebugServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Capture(dpb.CaptureRequest(router_id=net.router_id), timeout=10))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


@PROBE_PORT_ONLY
def test_probes_dhcp_dns_arp(lab):
    t, net, p1, p2 = lab
    dbg = Debug(t)
    r = dbg.probe(net.router_id, dhcp=dpb.DhcpProbe(network_id=net.id, mac=p2.mac))
    assert r.ok, r.summary
    fields = {f.key: f.value for f in r.fields}
    assert fields["reply"] == "OFFER"
    assert fields["yiaddr"] == p2.ip
    assert fields["server_id"] == net.gateway
    # A MAC the router does not know gets no offer (static DHCP only).
    r = dbg.probe(net.router_id, timeout=60, timeout_seconds=1,
                  dhcp=dpb.DhcpProbe(network_id=net.id, mac="02:aa:bb:cc:dd:ee"))
    assert not r.ok

    r = dbg.probe(net.router_id, dns=dpb.DnsProbe(name=f"vm2.{net.domain}"))
    assert r.ok, r.summary
    assert r.rcode == "NOERROR", r.summary
    assert [x.data for x in r.records if x.section == "answer"] == [p2.ip]
    r = dbg.probe(net.router_id, dns=dpb.DnsProbe(name=f"nothere.{net.domain}"))
    assert r.rcode == "NXDOMAIN"
    r = dbg.probe(net.router_id, dns=dpb.DnsProbe(name="www.example.test"))
    assert [x.data for x in r.records if x.section == "answer"] == [INET_HOST_IP]
    # From a probe port: through the router's guest-side filter, like a guest.
    r = dbg.probe(net.router_id, dns=dpb.DnsProbe(
        name=f"vm2.{net.domain}", source=dpb.ProbeSource(network_id=net.id)))
    assert r.ok, r.summary
    assert [x.data for x in r.records if x.section == "answer"] == [p2.ip], r.summary

    g = t.guest(net, p1)
    g.dhcp()
    r = dbg.probe(net.router_id, arp=dpb.ArpProbe(network_id=net.id, ip=p1.ip))
    assert r.ok, r.summary
    assert [h.mac for h in r.hops] == [p1.mac.lower()]


@PROBE_PORT_ONLY
def test_ping_traceroute_tcp(lab):
    t, net, _, _ = lab
    dbg = Debug(t)
    r = dbg.probe(net.router_id, ping=dpb.PingProbe(destination=INET_HOST_IP, count=2))
    assert r.ok
    assert [h.kind for h in r.hops] == ["echo-reply", "echo-reply"]
    # From a probe port on the guest network the router is the first hop.
    r = dbg.probe(net.router_id, traceroute=dpb.TracerouteProbe(
        destination=INET_HOST_IP, source=dpb.ProbeSource(network_id=net.id)))
    assert r.ok, r.summary
    hops = [h.address for h in r.hops]
    assert hops[0] == net.gateway
    assert hops[-1] == INET_HOST_IP
    assert EDGE_PUBLIC_IP in hops
    r = dbg.probe(net.router_id, tcp=dpb.TcpProbe(
        destination=INET_HOST_IP, port=WEB_PORT, source=dpb.ProbeSource(network_id=net.id)))
    assert r.ok
    assert r.hops[0].kind == "syn-ack"
    r = dbg.probe(net.router_id, tcp=dpb.TcpProbe(destination=INET_HOST_IP, port=81))
    assert not r.ok
    assert r.hops[0].kind == "rst"


def test_show_leases_conntrack_counters_interfaces_routes(lab):
    t, net, p1, _ = lab
    dbg = Debug(t)
    g = t.guest(net, p1)
    g.dhcp()
    leases = dbg.show(net.router_id, dpb.SHOW_KIND_LEASES).leases
    mine = [x for x in leases if x.mac == p1.mac.lower()]
    assert mine
    assert mine[0].ip == p1.ip
    assert mine[0].hostname == "vm1"
    assert mine[0].network_id == net.id
    # A connection out through source NAT shows translated in conntrack.
    assert g.run(["curl", "-s", "--max-time", "5",
                  f"http://{INET_HOST_IP}:{WEB_PORT}/"]).returncode == 0
    ct = dbg.show(net.router_id, dpb.SHOW_KIND_CONNTRACK, address=p1.ip).conntrack
    web = [c for c in ct if c.destination == INET_HOST_IP and c.destination_port == WEB_PORT]
    assert web
    assert "snat" in web[0].nat
    assert web[0].reply_destination == net.source_nat_ip
    counters = dbg.show(net.router_id, dpb.SHOW_KIND_COUNTERS).counters
    egress = [c for c in counters if c.comment == "guest egress" or
              (c.chain == "forward" and "egress" in c.object_kind + c.comment)]
    assert egress
    # The IPv4 connection above counts on an egress rule (not the IPv6 one).
    assert max(c.packets for c in egress) > 0
    ifaces = {i.role: i for i in dbg.show(net.router_id, dpb.SHOW_KIND_INTERFACES).interfaces}
    assert f"{net.gateway}/24" in ifaces["guest"].addresses
    assert ifaces["guest"].network_id == net.id
    assert ifaces["guest"].rx_packets > 0
    routes = dbg.show(net.router_id, dpb.SHOW_KIND_ROUTES).routes
    assert any(r.destination == "default" and r.gateway == EDGE_PUBLIC_IP for r in routes)


def test_trace_names_the_default_drop(cloud, lab):
    t, net, _, _ = lab
    dbg = Debug(t)
    public_ip = net.source_nat_ip
    bg = Background(dbg.trace(dpb.TraceRequest(
        router_id=net.router_id, destination=public_ip, protocol="tcp", port=2222,
        max_packets=1, max_seconds=30)))
    assert bg.started.wait(30)
    assert bg.items
    assert bg.items[0].ready
    subprocess.run(["ip", "netns", "exec", cloud.inet_ns, "curl", "-s", "--max-time", "2",
                    f"http://{public_ip}:2222/"], capture_output=True, timeout=30)
    events = bg.join()
    assert bg.error is None, bg.error
    drops = [e for e in events if e.verdict == "drop"]
    assert drops, [e.line for e in events]
    assert drops[-1].object_kind == "firewall-default"
    # The trace table is gone with the stream.
    ns = router_netns_name(cloud.prefix, net.router_id)
    tables = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                            capture_output=True, text=True).stdout
    assert "cloudnet-trace" not in tables


def _cli(cloud, t, *argv: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "CLOUDNET_SERVER": cloud.listen, "CLOUDNET_TOKEN": t.secret}
    return subprocess.Popen([sys.executable, "-m", "netmgr.cli.main", *argv], env=env,
                            stdout=stdout, stderr=subprocess.PIPE)


def test_cli_capture_to_tshark_show_and_probe(cloud, lab):
    t, net, _p1, p2 = lab
    if not shutil.which("tshark"):
        pytest.skip("tshark is not installed")
    cap = _cli(cloud, t, "debug", "capture", net.router_id, "--public", "--filter", "icmp",
               "-c", "2", "--seconds", "60", "-w", "-")
    tshark = subprocess.Popen(["tshark", "-r", "-"], stdin=cap.stdout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert cap.stdout is not None
    cap.stdout.close()
    # Pings from the router until the capture has its two packets.
    for _ in range(200):
        if cap.poll() is not None:
            break
        Debug(t).probe(net.router_id, ping=dpb.PingProbe(destination=EDGE_PUBLIC_IP, count=1))
        time.sleep(0.2)
    assert cap.wait(60) == 0, cap.stderr.read() if cap.stderr else ""
    out, err = tshark.communicate(timeout=60)
    assert tshark.returncode == 0, err
    assert "ICMP" in out
    assert EDGE_PUBLIC_IP in out

    show = _cli(cloud, t, "-o", "json", "debug", "show", net.router_id, "routes")
    routes = json.loads(show.communicate(timeout=60)[0])["routes"]
    assert show.returncode == 0
    assert any(r["gateway"] == EDGE_PUBLIC_IP for r in routes)
    dns = _cli(cloud, t, "debug", "probe", "dns", net.router_id, f"vm2.{net.domain}")
    text = dns.communicate(timeout=60)[0].decode()
    assert dns.returncode == 0
    assert p2.ip in text
    assert "NOERROR" in text
    bad = _cli(cloud, t, "debug", "capture", net.router_id, "--public", "--filter", "port x",
               "-w", "-")
    _, err_b = bad.communicate(timeout=60)
    assert bad.returncode == 1
    assert b"INVALID_ARGUMENT" in err_b
    assert b"filter" in err_b


def _trace_once(cloud, dbg, router_id: str, ip: str, port: int) -> list[dpb.TraceEvent]:
    bg = Background(dbg.trace(dpb.TraceRequest(
        router_id=router_id, destination=ip, protocol="tcp", port=port, max_packets=1,
        max_seconds=30)))
    assert bg.started.wait(30)
    assert bg.items, bg.error
    assert bg.items[0].ready, bg.error
    subprocess.run(["ip", "netns", "exec", cloud.inet_ns, "curl", "-s", "--max-time", "2",
                    f"http://{ip}:{port}/"], capture_output=True, timeout=30)
    events = bg.join()
    assert bg.error is None, bg.error
    return events


def test_trace_names_the_edge_default_drop_then_the_port_forward(cloud, lab):
    from cloudnet.netmgr.v1 import edge_pb2 as epb

    from tests.lib.edge import Edge

    t, net, p1, _ = lab
    dbg = Debug(t)
    e = Edge(t)
    ip = e.public_ip(net.id)
    t.api.wait_router_active(net.router_id)
    events = _trace_once(cloud, dbg, net.router_id, ip.ip, 8080)
    drops = [x for x in events if x.verdict == "drop"]
    assert drops, [x.line for x in events]
    assert (drops[0].object_kind, drops[0].object_id) == ("firewall-default", "drop")

    f = e.forward(public_ip_id=ip.id, protocol="tcp", public_port=8080, port_id=p1.id,
                  private_port=80)
    e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f.id))
    events = _trace_once(cloud, dbg, net.router_id, ip.ip, 8080)
    named = [x for x in events if x.object_id == f.id]
    assert named, [(x.line, x.object_kind, x.object_id) for x in events]
    dnat = [x for x in named if x.nat_target]
    assert dnat, [x.line for x in events]
    assert dnat[0].nat_target == f"{p1.ip}:80", [x.line for x in events]
    assert not [x for x in events if x.verdict == "drop" and x.table == "inet cloudnet"
                and x.chain == "edge_ingress"]


@PROBE_PORT_ONLY
def test_dhcp_request_probe_releases_its_own_lease_only(lab):
    t, net, p1, p2 = lab
    dbg = Debug(t)
    g = t.guest(net, p1)
    g.dhcp()

    def macs() -> set[str]:
        return {x.mac for x in dbg.show(net.router_id, dpb.SHOW_KIND_LEASES).leases}

    assert p1.mac.lower() in macs()
    for port in (p1, p2):
        r = dbg.probe(net.router_id, dhcp=dpb.DhcpProbe(network_id=net.id, mac=port.mac,
                                                        request=True))
        assert r.ok, r.summary
        assert {f.key: f.value for f in r.fields}["request_reply"] == "ACK"
    deadline = time.monotonic() + 10
    while p2.mac.lower() in macs():  # the probe's RELEASE is asynchronous to dnsmasq
        assert time.monotonic() < deadline, "the probe's lease was not released"
        time.sleep(0.1)
    assert p1.mac.lower() in macs(), "the guest's lease was released by a probe"


def _procs_in(ns: str) -> set[str]:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    names = set()
    for pid in pids.split():
        try:
            with open(f"/proc/{pid}/comm") as f:
                names.add(f.read().strip())
        except OSError:
            pass
    return names


@pytest.mark.netns_only("looks for the agent's tools among this host's processes")
def test_cancelled_streams_stop_the_agents_tools(cloud, lab):
    t, net, _, _ = lab
    dbg = Debug(t)
    ns = router_netns_name(cloud.prefix, net.router_id)
    streams = [
        dbg.capture(dpb.CaptureRequest(router_id=net.router_id,
                                       interface=dpb.InterfaceRef(public=True),
                                       filter="udp port 9", max_seconds=300), timeout=600),
        dbg.trace(dpb.TraceRequest(router_id=net.router_id, protocol="udp", port=9,
                                   max_seconds=300), timeout=600),
    ]
    for stream in streams:
        bg = Background(stream)
        assert bg.started.wait(30)
        assert {"tcpdump", "nft"} & _procs_in(ns)
        stream.cancel()
        bg.join()
    deadline = time.monotonic() + 15
    while {"tcpdump", "nft"} & _procs_in(ns):
        assert time.monotonic() < deadline, _procs_in(ns)
        time.sleep(0.1)
    tables = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                            capture_output=True, text=True).stdout
    assert "cloudnet-trace" not in tables


@PROBE_PORT_ONLY
def test_traceroute_agrees_with_the_system_traceroute(lab):
    t, net, p1, _ = lab
    if not shutil.which("traceroute"):
        pytest.skip("traceroute is not installed")
    g = t.guest(net, p1)
    g.dhcp()
    out = g.run(["traceroute", "-n", "-I", "-q", "1", "-w", "2", INET_HOST_IP]).stdout
    theirs = [line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1]
    ours = Debug(t).probe(net.router_id, traceroute=dpb.TracerouteProbe(
        destination=INET_HOST_IP, source=dpb.ProbeSource(network_id=net.id)))
    assert [h.address for h in ours.hops] == theirs == [net.gateway, EDGE_PUBLIC_IP,
                                                         INET_HOST_IP]


def test_show_lb_members_and_their_health(lab):
    from cloudnet.netmgr.v1 import edge_pb2 as epb

    from tests.lib.edge import Edge

    t, net, p1, p2 = lab
    g = t.guest(net, p1)
    g.dhcp()
    server = g.popen(["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo up"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        e = Edge(t)
        ip = e.public_ip(net.id)
        lb = e.call(e.lbs.CreateLoadBalancer, epb.CreateLoadBalancerRequest(
            load_balancer=epb.LoadBalancer(
                public_ip_id=ip.id, public_port=80, private_port=8080, protocol="tcp",
                members=[epb.LoadBalancerMember(port_id=p.id) for p in (p1, p2)],
                health_check=epb.LoadBalancerHealthCheck(type="tcp", interval_ms=200, rise=1,
                                                         fall=1))))
        e.wait_active(e.lbs.GetLoadBalancer, epb.GetLoadBalancerRequest(id=lb.id))
        dbg = Debug(t)
        deadline = time.monotonic() + 20
        while True:
            members = {m.port_id: m.status for m in
                       dbg.show(net.router_id, dpb.SHOW_KIND_LB_MEMBERS).lb_members
                       if m.load_balancer_id == lb.id}
            if members.get(p1.id, "").startswith("UP") and \
                    members.get(p2.id, "").startswith("DOWN"):
                break
            assert time.monotonic() < deadline, members
            time.sleep(0.2)
    finally:
        server.kill()
        server.wait(5)


def test_concurrent_streams_are_bounded_per_router(lab):
    t, net, _, _ = lab
    dbg = Debug(t)

    def start():
        return dbg.capture(dpb.CaptureRequest(
            router_id=net.router_id, interface=dpb.InterfaceRef(public=True),
            filter="udp port 9", max_seconds=300), timeout=600)

    running = [start(), start()]
    bgs = [Background(s) for s in running]
    try:
        for bg in bgs:
            assert bg.started.wait(30), bg.error
            assert bg.error is None, bg.error
        with pytest.raises(grpc.RpcError) as e:
            list(start())
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for s in running:
            s.cancel()
        for bg in bgs:
            bg.join()
    # The slots are given back once the agent has stopped the cancelled captures.
    deadline = time.monotonic() + 15
    while True:
        try:
            chunks = list(dbg.capture(dpb.CaptureRequest(
                router_id=net.router_id, interface=dpb.InterfaceRef(public=True),
                filter="udp port 9", max_seconds=0.5)))
            break
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            assert time.monotonic() < deadline, "the slots were not given back"
            time.sleep(0.2)
    assert summary(chunks).stopped_by == "seconds"


def test_trace_names_the_ingress_firewall_rule_and_static_nat(cloud, lab):
    from cloudnet.netmgr.v1 import edge_pb2 as epb

    from tests.lib.edge import Edge

    t, net, _, p2 = lab
    e = Edge(t)
    eip = e.public_ip(net.id)
    nat = e.static_nat(eip.id, p2.id)
    rule = e.rule(direction=epb.FIREWALL_DIRECTION_INGRESS, public_ip_id=eip.id,
                  protocol="tcp", port=2200, cidrs=["198.51.100.0/24"])
    e.wait_active(e.nats.GetStaticNat, epb.GetStaticNatRequest(id=nat.id))
    e.wait_active(e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest(id=rule.id))
    events = _trace_once(cloud, Debug(t), net.router_id, eip.ip, 2200)
    objects = {(x.object_kind, x.object_id) for x in events}
    assert ("firewall", rule.id) in objects, [(x.line, x.object_kind, x.object_id)
                                              for x in events]
    assert ("staticnat", nat.id) in objects
    assert any(x.nat_target == p2.ip for x in events)


def test_probe_ports_on_a_router_vm_are_refused_clearly(cloud, lab):
    """A probe from a tenant network on a VM router: FAILED_PRECONDITION saying
    why, not an internal error; the same probe from the router itself works."""
    t, net, _, p2 = lab
    dbg = Debug(t)
    if cloud.router_backend != "vm":
        pytest.skip("namespace routers plug probe ports (the tests above)")
    with pytest.raises(grpc.RpcError) as err:
        dbg.probe(net.router_id, dns=dpb.DnsProbe(
            name=f"vm2.{net.domain}", source=dpb.ProbeSource(network_id=net.id)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "probe port" in err.value.details()
    r = dbg.probe(net.router_id, dns=dpb.DnsProbe(name=f"vm2.{net.domain}"))
    assert r.ok, r.summary
    assert r.rcode == "NOERROR", r.summary
    assert [x.data for x in r.records if x.section == "answer"] == [p2.ip]
