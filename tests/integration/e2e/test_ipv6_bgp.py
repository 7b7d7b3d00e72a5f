"""A routed, dual-stack network through the whole all-in-one: netmgr allocates
its routed CIDR and /64, the router announces both to the edge's stock FRR
by BGP (and the edge routes by them), guests reach the internet host by
their own addresses (IPv4 unNATed, IPv6 by SLAAC), nothing reaches them
until an ingress firewall rule naming the network allows it, and deleting
the network withdraws its prefixes."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Callable

import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import routing_pb2 as rpb

from aio.allinone import AllInOne
from aio.nsguest import NamespaceGuest
from aio.topology import INET_CIDR6, INET_HOST_IP, INET_HOST_IP6, WEB_PORT
from router.services.base import RouterPaths
from router.services.nftables.journal import read_journal

pytestmark = pytest.mark.integration


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def global_v6(guest: NamespaceGuest) -> list[str]:
    out = guest.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


def test_a_routed_dual_stack_network_end_to_end(aio_cloud: AllInOne, make_tenant) -> None:
    t = make_tenant()
    net = t.network(name="routed", cidr="", routed=True, ipv6_mode=rpb.IPV6_MODE_SLAAC)
    assert net.routed
    assert ipaddress.IPv4Network(net.cidr).subnet_of(ipaddress.IPv4Network("198.18.0.0/16"))
    assert net.ipv6_cidr.startswith("2001:db8:1000:")
    t.api.wait_router_active(net.router_id)
    edge = aio_cloud.bgp_edge
    wait_until(lambda: {net.cidr, net.ipv6_cidr} <= set(edge.routes()),
               "the network's prefixes in the edge's BGP table")

    p4, p6 = t.port(net.id, hostname="v4"), t.port(net.id, hostname="v6")
    t.api.wait_router_active(net.router_id)
    g4, g6 = t.guest(net, p4), t.guest(net, p6)
    g6.run(["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
    assert g4.dhcp().ip == p4.ip
    wait_until(lambda: p6.ipv6 in global_v6(g6), "SLAAC on the guest")

    # Out by their own addresses: no source NAT, the internet host sees them.
    seen4 = g4.run(["curl", "-4", "-s", "--max-time", "5",
                    f"http://{INET_HOST_IP}:{WEB_PORT}/"]).stdout.strip()
    assert seen4 == p4.ip
    seen6 = g6.run(["curl", "-6", "-s", "--max-time", "5",
                    f"http://[{INET_HOST_IP6}]:{WEB_PORT}/"]).stdout.strip()
    assert seen6 == p6.ipv6

    # In: dropped until an ingress rule naming the network allows it.
    server = g6.popen(["socat", "TCP6-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo guest"])
    try:
        def from_inet() -> str:
            r = _inet_curl(aio_cloud, f"http://[{p6.ipv6}]:8080/")
            return r.stdout.strip() if r.returncode == 0 else ""

        assert from_inet() == ""
        fw = erpc.FirewallServiceStub(t.api.channel)
        rule = t.api.call(fw.CreateFirewallRule, epb.CreateFirewallRuleRequest(
            firewall_rule=epb.FirewallRule(direction=epb.FIREWALL_DIRECTION_INGRESS,
                                           network_id=net.id, protocol="tcp", port=8080,
                                           cidrs=[INET_CIDR6])))
        t.api.wait_router_active(net.router_id)
        wait_until(lambda: from_inet() == "guest", "the guest reached from the internet host")
        if aio_cloud.router_backend != "vm":
            # It went as an edge delta (journaled by the agent), not a full push.
            journal = RouterPaths(os.path.join(aio_cloud.state_dir, "agent", "routers",
                                               net.router_id)).edge_journal
            assert [r.id for d in read_journal(journal) for r in d.guest_ingress_rules] == [
                rule.id]
    finally:
        server.kill()
        server.wait()

    t.api.call(t.api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=net.id, force=True))
    wait_until(lambda: not {net.cidr, net.ipv6_cidr} & set(edge.routes()),
               "the network's prefixes withdrawn")


def _inet_curl(aio: AllInOne, url: str) -> subprocess.CompletedProcess[str]:
    # The guest's server answers a bare line (no HTTP headers).
    return subprocess.run(["ip", "netns", "exec", aio.inet_ns, "curl", "-s", "--http0.9",
                           "--max-time", "2", url], capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.mark.netns_only
def test_an_ipv4_only_router_keeps_ipv6_off_in_a_zone_with_ipv6(
        aio_cloud: AllInOne, make_tenant) -> None:
    """The all-in-one's zone has the provider's IPv6 (public_cidr6), but a
    router with no /64 has nothing to route over it: no uplink, and IPv6 off
    on every link (no link-local address announced to the provider segment's
    routers)."""
    t = make_tenant()
    net = t.network(name="v4only", cidr="10.44.0.0/24")
    t.api.wait_router_active(net.router_id)
    (ns,) = [n for n in os.listdir("/run/netns")
             if n.startswith(f"{aio_cloud.prefix}r-") and n.endswith(net.router_id[:12])]

    def ip(*args: str) -> str:
        return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    links = [line.split(":")[1].strip().split("@")[0]
             for line in ip("-o", "link").splitlines()]
    assert "pub0" in links, links
    assert ip("-6", "-o", "addr") == ""
    for link in links:
        if link == "lo":
            continue
        off = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n",
                              f"net.ipv6.conf.{link}.disable_ipv6"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert off == "1", link
