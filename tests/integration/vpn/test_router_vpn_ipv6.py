"""IPv6 through a site-to-site VPN of a namespace router against a stock
strongSwan peer: one IKEv2 child carries both families (the outer addresses
stay IPv4), a dual-stack guest reaches a host behind the peer by its IPv6
address (the host sees the guest's own address), nothing of it in clear on
the public side, and IPv6 outside the selectors does not enter the tunnel.

    guest p1 10.10.0.11, 2001:db8:10::11 ─ router ─ up (IPv6 edge 2001:db8:ffff::1)
                                                     │
                h1 172.16.1.10, 2001:db8:1601::10 ─ peer 192.0.2.2 (charon, stock config)
                h2 172.16.2.10, 2001:db8:1602::10 ─┘   (h2's /64 not in the selectors)
"""

from __future__ import annotations

import ipaddress
import subprocess

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import routing_pb2 as rpb
from cloudnet.router.v1 import vpn_pb2

from netmgr.model.ipv6_rules import eui64
from tests.lib.peerlab import PEER_IP, PEER_NETS, capture_public, make_peer, router_connection
from tests.lib.routerlab import (
    PUBLIC_IP,
    InProcessAgent,
    Topology,
    make_config,
    sh,
    wait_for,
)

pytestmark = pytest.mark.integration

ROUTER = "vpn6-r1"

GUEST_IP = "10.10.0.11"
NET6, GW6, GUEST6 = "2001:db8:10::/64", "2001:db8:10::1", "2001:db8:10::11"
PEER6 = ("2001:db8:1601::/64", "2001:db8:1602::/64")
HOST6 = ("2001:db8:1601::10", "2001:db8:1602::10")
PUBLIC6, EDGE6 = "2001:db8:ffff::/64", "2001:db8:ffff::1"
LOCAL = ("10.10.0.0/24", NET6)
# The selectors: the peer's first IPv4 and first IPv6 network (not h2's /64).
REMOTE = (PEER_NETS[0], PEER6[0])
PORT = 8080

def conn_status(a: InProcessAgent) -> vpn_pb2.VpnConnectionStatus:
    [st] = a.agent.status(ROUTER).vpn_connections
    return st


def wait_established(a: InProcessAgent) -> vpn_pb2.VpnConnectionStatus:
    def up() -> bool:
        st = conn_status(a)
        return st.ike_state == "ESTABLISHED" and any(ch.state == "INSTALLED"
                                                     for ch in st.children)

    try:
        wait_for(up, 60, "the tunnel to be established")
    except AssertionError:
        raise AssertionError(f"tunnel not up: {conn_status(a)}") from None
    return conn_status(a)


def _no_dad(ns: str) -> None:
    for key in ("all", "default"):
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.accept_dad=0")


def _config() -> pb.RouterConfig:
    cfg = make_config(ROUTER, 1, ["p1"])
    net = cfg.guest_networks[0]
    net.ipv6_cidr, net.ipv6_gateway, net.ipv6_mode = NET6, GW6, "slaac"
    # A routed IPv6 uplink: what is outside the selectors leaves there.
    cfg.ipv6_uplink.CopyFrom(rpb.Ipv6Uplink(
        address=f"{eui64(cfg.interfaces[0].mac, PUBLIC6)}/64", gateway=EDGE6))
    conn = router_connection(2)
    conn.local_cidrs[:], conn.peer_cidrs[:] = LOCAL, REMOTE
    cfg.vpn_connections.append(conn)
    return cfg


def test_a_dual_stack_guest_reaches_the_peer_over_ipv6_through_the_tunnel(
        topo: Topology, agent: InProcessAgent) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    topo.internet()
    up = f"{topo.prefix}-up"
    _no_dad(up)
    sh("ip", "-n", up, "-6", "addr", "add", f"{EDGE6}/64", "dev", "eth0", "nodad")
    guest = topo.ns("p1")
    _no_dad(guest)
    # Its static address only (no SLAAC one from the router's advertisements).
    sh("ip", "netns", "exec", guest, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_ra=0")
    topo.fabric.plug(f"{topo.prefix}p1"[:15], 100, guest, "eth0", "02:aa:00:00:00:11")
    topo.configure_guest(guest, GUEST_IP)
    sh("ip", "-n", guest, "-6", "addr", "add", f"{GUEST6}/64", "dev", "eth0", "nodad")
    sh("ip", "-n", guest, "-6", "route", "replace", "default", "via", GW6)
    peer = make_peer(topo, up, 2, peer_ts=REMOTE, local_ts=LOCAL)
    _no_dad(peer.ns)
    sh("ip", "netns", "exec", peer.ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
    for i, (h, net6, host6) in enumerate(zip(peer.hosts, PEER6, HOST6, strict=True), 1):
        _no_dad(h)
        # nodad: usable at once (the links exist already; a tentative source
        # address fails the peer's route into its tunnel).
        sh("ip", "-n", peer.ns, "-6", "addr", "add", net6.replace("::/64", "::1/64"),
           "dev", f"lan{i}", "nodad")
        sh("ip", "-n", h, "-6", "addr", "add", f"{host6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", h, "-6", "route", "add", "default", "via", net6.replace("::/64", "::1"))
    peer.start()
    status = agent.agent.apply(_config())
    assert status.applied_generation == 1, status.last_error
    # One child SA, both families in its selectors.
    st = wait_established(agent)
    assert len(st.children) == 1
    assert {t for ch in st.children for t in ch.remote_ts} == set(REMOTE)
    assert {t for ch in st.children for t in ch.local_ts} == set(LOCAL)

    # h1 answers with the address it saw the connection come from.
    server = subprocess.Popen(
        ["ip", "netns", "exec", peer.hosts[0], "socat", f"TCP6-LISTEN:{PORT},fork,reuseaddr",
         "SYSTEM:echo $SOCAT_PEERADDR"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sh("ip", "netns", "exec", peer.hosts[0], "sh", "-c",
           f"for i in $(seq 100); do ss -ltn | grep -q ':{PORT} ' && exit 0; "
           "sleep 0.05; done; exit 1")
        seen: list[str] = []
        packets = capture_public(topo, 1.0, [["ip", "netns", "exec", guest, "busybox", "ping",
                                              "-6", "-c", "3", "-W", "2", HOST6[0]]])
        seen.append(sh("ip", "netns", "exec", guest, "socat", "-T", "5", "-",
                       f"TCP6:[{HOST6[0]}]:{PORT}", timeout=20).strip())
    finally:
        server.terminate()
        server.wait(timeout=10)
    # Unrouted, untranslated: the host saw the guest's own IPv6 address.
    assert [ipaddress.ip_address(a.strip("[]")) for a in seen] == [
        ipaddress.ip_address(GUEST6)]
    esp = [p for p in packets if IP in p and UDP in p and 4500 in (p[UDP].sport, p[UDP].dport)
           and len(p[UDP].payload) > 8]
    assert {(p[IP].src, p[IP].dst) for p in esp} == {(PUBLIC_IP, PEER_IP), (PEER_IP, PUBLIC_IP)}
    assert len(esp) >= 6, f"{len(esp)} ESP-in-UDP packets for 3 echo requests and replies"
    clear = [p for p in packets if IPv6 in p and {p[IPv6].src, p[IPv6].dst} & {GUEST6, HOST6[0]}]
    assert not clear, f"cleartext IPv6 on the public side: {clear[0].summary()}"

    # Outside the selectors (h2's /64): not into the tunnel. It leaves in
    # clear by the IPv6 uplink (routed like any guest IPv6; the edge has no
    # route to it), and the child SA's counters do not move.
    before = sum(ch.bytes_out for ch in conn_status(agent).children)
    packets = capture_public(topo, 0.5, [["ip", "netns", "exec", guest, "busybox", "ping",
                                            "-6", "-c", "2", "-W", "1", HOST6[1]]], check=False)
    outside = [p for p in packets if IPv6 in p and p[IPv6].dst == HOST6[1]]
    assert outside, "the echo requests to h2 left by the uplink"
    assert outside[0][IPv6].src == GUEST6
    assert sum(ch.bytes_out for ch in conn_status(agent).children) == before
