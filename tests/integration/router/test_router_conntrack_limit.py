"""A flood of new connections through one router stops at that router's
conntrack limit, while another router on the same host keeps opening new ones.

    guest A ─ seg 100 ─ router A (limit L) ─┐
                                             ├─ seg 0 ─ uplink ── internet (198.51.100.10:8080)
    guest B ─ seg 101 ─ router B (limit L) ─┘
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from common import netns
from router.runtime import router_netns_name
from tests.lib.agentprocess import AgentProcess, apply_all
from tests.lib.routerlab import HOSTS, INET_HOST, Topology, make_config, sh

pytestmark = pytest.mark.integration

B_PUBLIC_IP = "203.0.113.11"
# Nothing answers there: each flood connection stays half-open (SYN_SENT) in
# the router's table for the whole test.
BLACKHOLE = "198.51.100.99"
SERVER_PORT = 8080


@pytest.fixture(params=[(40, 400), (256, 1200)], ids=["one-count", "four-shares"])
def limit_and_flood(request: pytest.FixtureRequest) -> tuple[int, int]:
    """The router's limit (256: counted in four shares of 64), and the new
    connections tried through router A (bounded)."""
    return request.param


@pytest.fixture
def agent_process(topo: Topology, tmp_path: object,
                  limit_and_flood: tuple[int, int]) -> Iterator[AgentProcess]:
    a = AgentProcess(topo, f"{tmp_path}/agent.sock", "--router-conntrack-limit",
                     str(limit_and_flood[0]))
    try:
        yield a
    finally:
        a.kill()


def conntrack_count(ns: str) -> int:
    def read() -> int:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            return int(f.read())
    return netns.run_in_netns(ns, read)


def connects(ns: str) -> bool:
    """A new TCP connection from ``ns`` to the internet host's server answers."""
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "socat", "-T2", "-",
             f"TCP:{INET_HOST}:{SERVER_PORT},connect-timeout=2"],
            input="", capture_output=True, text=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and "hello" in out.stdout


FLOOD_SCRIPT = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((sys.argv[1], 80))  # one SYN, one new connection through the router
    held.append(s)
time.sleep(float(sys.argv[3]))  # keep them open while the test looks
"""


def test_one_routers_flood_stops_at_its_limit_and_another_router_still_connects(
    topo: Topology, agent_process: AgentProcess, limit_and_flood: tuple[int, int]
) -> None:
    limit, flood_size = limit_and_flood
    stub = agent_process.start()
    inet = topo.internet()
    server = subprocess.Popen(
        ["ip", "netns", "exec", inet, "socat", f"TCP-LISTEN:{SERVER_PORT},reuseaddr,fork",
         "SYSTEM:echo hello"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        cfg_a = make_config(a, 1, ["p1"])
        cfg_b = make_config(b, 1, ["p2"])
        cfg_b.interfaces[0].addresses[:] = [f"{B_PUBLIC_IP}/24"]
        cfg_b.interfaces[0].mac = "02:00:00:00:00:20"
        cfg_b.interfaces[1].segment_id = 101
        cfg_b.source_nats[0].public_ip = B_PUBLIC_IP
        for s in apply_all(stub, [cfg_a, cfg_b]):
            assert s.applied_generation == 1, s.last_error
        guest_a = topo.guest("p1")
        guest_b = topo.ns("p2")
        topo.fabric.plug(f"{topo.prefix}p2"[:15], 101, guest_b, "eth0", HOSTS["p2"][0])
        topo.configure_guest(guest_a, HOSTS["p1"][1])
        topo.configure_guest(guest_b, HOSTS["p2"][1])
        ns_a, ns_b = router_netns_name(topo.prefix, a), router_netns_name(topo.prefix, b)
        deadline = time.monotonic() + 20
        while not (connects(guest_a) and connects(guest_b)):
            assert time.monotonic() < deadline, "guests never reached the server"
            time.sleep(0.5)

        flood = subprocess.Popen(
            ["ip", "netns", "exec", guest_a, sys.executable, "-c", FLOOD_SCRIPT, BLACKHOLE,
             str(flood_size), "30"])
        try:
            time.sleep(2)
            held = conntrack_count(ns_a)
            # Router A holds its limit's worth and no more (plus the last
            # socat connections, closing); the flood asked for ten times that.
            assert limit <= held <= limit + 10, held
            assert not connects(guest_a), "router A opened a connection past its limit"
            # Router B, on the same host and the same conntrack table, still opens new ones.
            assert connects(guest_b)
            assert conntrack_count(ns_b) < limit
            drops = sh("ip", "netns", "exec", ns_a, "nft", "list", "chain", "inet", "cloudnet",
                       "conntrack_limit")
            dropped = int(drops.split("counter packets ")[1].split()[0])
            assert dropped >= flood_size - limit, drops
        finally:
            flood.kill()
            flood.wait(timeout=10)
    finally:
        server.kill()
        server.wait(timeout=10)
