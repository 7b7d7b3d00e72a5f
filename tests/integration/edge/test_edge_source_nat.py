"""Port forwards and a load balancer on a network's source-NAT address,
through a real router: the forwards serve the internet (their source rules
hold), while the guests' outbound connections keep going out from that same
address and get their replies, also a connection opened before the forward
and one from the forwarded port itself; the address's other traffic (ping)
is as it was."""

from __future__ import annotations

import subprocess
import time

import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.router.v1 import diag_pb2 as dpb

from aio.allinone import INET_DNS_IP, INET_HOST_IP, WEB_PORT
from tests.lib.diag import Debug
from tests.lib.edge import Edge, setup_net
from tests.lib.guest_servers import TCP, UDP, ask, in_ns, serve

pytestmark = pytest.mark.integration

SITE_CIDR = "10.53.0.0/24"
ECHO_PORT = 7777


def _ask_from(ns: str, source: str, ip: str, port: int, timeout: float = 2) -> str:
    """What a TCP client bound to ``source`` gets from ip:port ("" for nothing)."""
    r = in_ns(ns, ["socat", f"-T{timeout}", "-",
                   f"TCP:{ip}:{port},bind={source},connect-timeout={timeout}"],
              input="x\n", timeout=timeout + 10)
    return r.stdout.strip()


def _seen_from(guest) -> str:
    r = guest.run(["curl", "-s", "--max-time", "5", f"http://{INET_HOST_IP}:{WEB_PORT}/"])
    return r.stdout.strip()


def _pings(ns: str, ip: str) -> bool:
    return in_ns(ns, ["busybox", "ping", "-c", "1", "-W", "2", ip]).returncode == 0


class _Open:
    """A guest's TCP connection to the internet echo server, held open: one
    line answered per line sent."""

    def __init__(self, guest, source_port: int = 0) -> None:
        bind = f",sourceport={source_port}" if source_port else ""
        self.proc = guest.popen(["socat", "-T30", "-", f"TCP:{INET_HOST_IP}:{ECHO_PORT}{bind}"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)

    def say(self, word: str) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def echo(cloud, servers):
    """An echo server on the internet host: answers each line with "inet-<line>"."""
    servers.append(subprocess.Popen(
        ["ip", "netns", "exec", cloud.inet_ns, "socat",
         f"TCP-LISTEN:{ECHO_PORT},fork,reuseaddr", "SYSTEM:while read l; do echo inet-$l; done"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 5
    while f":{ECHO_PORT} " not in in_ns(cloud.inet_ns, ["ss", "-Htln"]).stdout:
        assert time.monotonic() < deadline, "echo server did not start"
        time.sleep(0.05)


def test_forwards_and_a_load_balancer_on_the_source_nat_address(cloud, site, servers, echo):
    t, net, (p1, _p2), (g1, g2) = setup_net(site, 2)
    e = Edge(t)
    snat = next(i for i in e.call(e.ips.ListPublicIps, epb.ListPublicIpsRequest(
        network_id=net.id)).public_ips if i.source_nat)
    assert snat.ip == net.source_nat_ip
    inet = cloud.inet_ns
    assert _seen_from(g2) == snat.ip
    assert _pings(inet, snat.ip)
    before = _Open(g2)  # opened before any forward exists
    try:
        assert before.say("a") == "inet-a"
        serve(servers, g1, TCP, 8022, "g1-tcp")
        serve(servers, g1, UDP, 5353, "g1-udp")
        serve(servers, g1, TCP, 8080, "g1-web")
        rules = [
            e.forward(public_ip_id=snat.id, protocol=TCP, public_port=2222, port_id=p1.id,
                      private_port=8022),
            e.forward(public_ip_id=snat.id, protocol=UDP, public_port=5000, port_id=p1.id,
                      private_port=5353),
            # Only from the internet host's first address.
            e.forward(public_ip_id=snat.id, protocol=TCP, public_port=2223, port_id=p1.id,
                      private_port=8022, source_cidrs=[f"{INET_HOST_IP}/32"]),
        ]
        for f in rules:
            got = e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f.id))
            assert got.public_ip == snat.ip
        lb = e.call(e.lbs.CreateLoadBalancer, epb.CreateLoadBalancerRequest(
            load_balancer=epb.LoadBalancer(
                public_ip_id=snat.id, public_port=80, protocol="tcp", private_port=8080,
                members=[epb.LoadBalancerMember(port_id=p1.id)],
                source_cidrs=[f"{INET_HOST_IP}/32"])))
        e.wait_active(e.lbs.GetLoadBalancer, epb.GetLoadBalancerRequest(id=lb.id), timeout=60)

        # Inbound: the forwards and the load balancer serve, their source rules hold.
        assert ask(inet, TCP, snat.ip, 2222) == "g1-tcp"
        assert ask(inet, UDP, snat.ip, 5000) == "g1-udp"
        assert _ask_from(inet, INET_HOST_IP, snat.ip, 2223) == "g1-tcp"
        assert _ask_from(inet, INET_DNS_IP, snat.ip, 2223) == ""
        assert _ask_from(inet, INET_HOST_IP, snat.ip, 80) == "g1-web"
        assert _ask_from(inet, INET_DNS_IP, snat.ip, 80) == ""
        assert ask(inet, TCP, snat.ip, 2224, timeout=1) == ""  # not forwarded: as before
        assert ask(g2.netns, TCP, snat.ip, 2222) == "g1-tcp"  # hairpin, as on a public IP
        assert _pings(inet, snat.ip)

        # Outbound from the same address, meanwhile: the network's source NAT is
        # intact, and replies reach the guest that opened the connection.
        assert _seen_from(g2) == snat.ip
        assert _seen_from(g1) == snat.ip
        assert before.say("b") == "inet-b"  # the connection opened before the forward
        # One from the forwarded port itself: its replies are its own, not the forward's.
        same_port = _Open(g2, source_port=2222)
        try:
            assert same_port.say("c") == "inet-c"
            # Its replies come to the forwarded port (source NAT kept the port).
            shown = Debug(t).show(net.router_id, dpb.SHOW_KIND_CONNTRACK, address=INET_HOST_IP)
            assert any(c.source_port == 2222 and c.destination_port == ECHO_PORT
                       and c.reply_destination == snat.ip and c.reply_destination_port == 2222
                       for c in shown.conntrack), [c.line for c in shown.conntrack]
            assert ask(inet, TCP, snat.ip, 2222) == "g1-tcp"  # ... while the forward serves
            assert same_port.say("d") == "inet-d"
        finally:
            same_port.close()
        assert before.say("e") == "inet-e"
    finally:
        before.close()
