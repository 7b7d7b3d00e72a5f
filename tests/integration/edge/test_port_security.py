"""Port security at the router, with scapy in real guest namespaces: a guest
sending with another guest's address is neither source-NATed nor forwarded
(and the router counts what it dropped), the guests' own traffic still
flows, and a spoofer's ARP does not take another guest's port forward."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb

from aio.allinone import INET_HOST_IP
from router.runtime import router_netns_name
from tests.lib import spoof
from tests.lib.edge import Edge
from tests.lib.guest_servers import TCP, ask, serve
from tests.lib.pkt import capture

pytestmark = pytest.mark.integration

PROBE_PORT = 9999
# One network (one router: a VM boot under TCG on the VM backend) for the
# module; each test has its own victim and spoofer (tests/fixtures/edge.py: site).
SITE_CIDR = "10.72.0.0/24"


def two_guests(site, name: str):
    t, net = site.t, site.net
    victim = t.port(net.id, hostname=f"{name}-victim")
    spoofer = t.port(net.id, hostname=f"{name}-spoofer")
    t.api.wait_router_active(net.router_id)
    gv, gs = t.guest(net, victim), t.guest(net, spoofer)
    lv, ls = gv.dhcp(), gs.dhcp()
    return t, net, (victim, gv, lv), (spoofer, gs, ls)


def gateway_mac(guest, gateway: str) -> str:
    guest.run(["busybox", "ping", "-c", "1", "-W", "2", gateway])
    out = guest.run(["ip", "-j", "neigh", "show", gateway]).stdout
    return str(json.loads(out)[0]["lladdr"])


def router_counter(cloud, router_id: str, family: str, chain: str, comment: str) -> int:
    """Packets the router's rule tagged ``comment`` matched (netns routers)."""
    ns = router_netns_name(cloud.prefix, router_id)
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "chain", family,
                          "cloudnet", chain], capture_output=True, text=True, check=True).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule and rule.get("comment") == comment:
            return int(next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e))
    raise AssertionError(f"no rule {comment} in {family} {chain}")


def markers(packets) -> list[str]:
    from scapy.all import UDP  # type: ignore

    return [bytes(p[UDP].payload).decode(errors="replace") for p in packets
            if UDP in p and p[UDP].dport == PROBE_PORT]


def test_a_spoofed_source_is_dropped_and_the_own_address_still_works(
        cloud, site, tmp_path):
    _t, net, (pv, gv, lv), (ps, gs, ls) = two_guests(site, "src")
    router_mac = gateway_mac(gs, ls.router)
    if cloud.router_backend == "netns":
        dropped = router_counter(cloud, net.router_id, "inet", "port_guard", "cn:port-spoof")
    with capture(cloud.inet_ns, "eth0", str(tmp_path / "inet.pcap")) as got:
        # The spoofer, as the victim (its IP, its own MAC), out through source NAT.
        spoof.run(gs.netns, "udp", gs.ifname, ps.mac, router_mac, lv.ip, INET_HOST_IP,
                  str(PROBE_PORT), "spoofed", "5")
        # ... and as itself; the victim as itself.
        spoof.run(gs.netns, "udp", gs.ifname, ps.mac, router_mac, ls.ip, INET_HOST_IP,
                  str(PROBE_PORT), "own", "3")
        spoof.run(gv.netns, "udp", gv.ifname, pv.mac, router_mac, lv.ip, INET_HOST_IP,
                  str(PROBE_PORT), "victim", "3")
    seen = markers(got)
    assert "own" in seen
    assert "victim" in seen
    assert "spoofed" not in seen, seen
    if cloud.router_backend == "netns":
        assert router_counter(cloud, net.router_id, "inet", "port_guard",
                              "cn:port-spoof") >= dropped + 5


def test_a_spoofers_arp_does_not_take_a_port_forward(cloud, site, servers):
    t, net, (pv, gv, lv), (ps, gs, ls) = two_guests(site, "arp")
    e = Edge(t)
    ip = e.public_ip(net.id)
    f = e.forward(public_ip_id=ip.id, protocol=TCP, public_port=80, port_id=pv.id,
                  private_port=8080)
    e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f.id))
    serve(servers, gv, TCP, 8080, "victim")
    router_mac = gateway_mac(gs, ls.router)
    if cloud.router_backend == "netns":
        lies_dropped = router_counter(cloud, net.router_id, "arp", "arp_guard", "cn:arp-spoof")
    assert ask(cloud.inet_ns, TCP, ip.ip, 80) == "victim"  # the router knows the victim
    # Then the spoofer takes the victim's address too, and serves the same port.
    gs.run(["ip", "addr", "add", f"{lv.ip}/32", "dev", gs.ifname], check=True)
    serve(servers, gs, TCP, 8080, "spoofer")
    liar = subprocess.Popen(spoof.command(gs.netns, "arp", gs.ifname, ps.mac, router_mac,
                                          lv.ip, ls.router, "12"))
    try:
        time.sleep(2)  # past the neighbour entry's locktime, many lies told
        answers = [ask(cloud.inet_ns, TCP, ip.ip, 80) for _ in range(5)]
    finally:
        liar.wait(timeout=60)
    assert answers == ["victim"] * 5, answers
    if cloud.router_backend == "netns":
        ns = router_netns_name(cloud.prefix, net.router_id)
        neigh = json.loads(subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "-j", "neigh", "show", lv.ip],
            capture_output=True, text=True, check=True).stdout)
        assert [n["lladdr"] for n in neigh] == [pv.mac.lower()]
        assert router_counter(cloud, net.router_id, "arp", "arp_guard",
                              "cn:arp-spoof") > lies_dropped

