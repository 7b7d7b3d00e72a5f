"""A router made by the agent serves DHCP, DNS and source NAT to a real guest."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.runtime import router_netns_name
from tests.lib.routerlab import (
    DOMAIN,
    HOSTS,
    INET_HOST,
    PUBLIC_IP,
    UPSTREAM_ANSWER,
    UPSTREAM_NAME,
    InProcessAgent,
    Topology,
    make_config,
    sh,
)

pytestmark = pytest.mark.integration

# Accepts one connection and prints the peer address it came from.
PEER_SERVER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 8080)); s.listen(1); print('ready', flush=True)\n"
    "c, peer = s.accept(); print(peer[0], flush=True)\n"
)


def dig(ns: str, name: str, server: str = "10.10.0.1") -> list[str]:
    out = sh("ip", "netns", "exec", ns, "dig", "+short", "+time=2", "+tries=2",
             f"@{server}", name)
    return out.split()


def test_guest_gets_lease_resolves_names_and_leaves_through_snat(
    topo: Topology, agent: InProcessAgent, tmp_path: object
) -> None:
    inet = topo.internet()
    router_id = uuid.uuid4().hex
    reply = agent.stub.ApplyConfig(pb.ApplyConfigRequest(
        config=make_config(router_id, 1, ["p1", "p2"])))
    status = reply.status
    assert status.applied_generation == 1, status.last_error
    assert not status.last_error
    assert {s.name: s.healthy for s in status.services} == {
        "interfaces": True, "nftables": True, "dnsmasq": True}
    assert {(o.kind, o.id, o.ok) for o in status.objects} == {
        ("network", "net1", True), ("port", "p1", True), ("port", "p2", True)}
    assert all(s.version for s in status.services)

    guest = topo.guest("p1")
    env = topo.dhcp(guest, str(tmp_path))
    assert env["ip"] == HOSTS["p1"][1]
    assert env["subnet"] == "255.255.255.0"
    assert env["router"].split() == ["10.10.0.1"]
    assert env["dns"].split() == ["10.10.0.1"]
    assert env["domain"] == DOMAIN
    assert env["search"].split() == [DOMAIN, "corp.test"]
    assert env["mtu"] == "1400"
    assert env["lease"] == "3600"

    topo.configure_guest(guest, env["ip"])
    assert dig(guest, f"vm2.{DOMAIN}") == [HOSTS["p2"][1]]
    assert dig(guest, f"nothere.{DOMAIN}") == []  # authoritative: not forwarded
    assert dig(guest, UPSTREAM_NAME) == [UPSTREAM_ANSWER]

    server = subprocess.Popen(
        ["ip", "netns", "exec", inet, sys.executable, "-c", PEER_SERVER],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        sh("ip", "netns", "exec", guest, sys.executable, "-c",
           f"import socket; socket.create_connection(('{INET_HOST}', 8080), timeout=5).close()")
        assert server.stdout.readline().strip() == PUBLIC_IP
    finally:
        server.kill()
        server.wait()

    # Nothing from outside reaches the guest network, even with a route to it.
    up = f"{topo.prefix}-up"
    sh("ip", "-n", up, "route", "add", "10.10.0.0/24", "via", PUBLIC_IP)
    probe = subprocess.run(
        ["ip", "netns", "exec", up, "ping", "-c", "1", "-W", "1", HOSTS["p1"][1]],
        capture_output=True, check=False)
    assert probe.returncode != 0

    netns = router_netns_name(topo.prefix, router_id)
    ruleset = sh("ip", "netns", "exec", netns, "nft", "list", "table", "inet", "cloudnet")
    assert f"snat ip to {PUBLIC_IP}" in ruleset
    assert sh("ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"


def test_ip_forward_and_routes_are_reconciled(topo: Topology, agent: InProcessAgent) -> None:
    router_id = uuid.uuid4().hex
    cfg = make_config(router_id, 1, ["p1"])
    assert agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status.applied_generation == 1
    netns = router_netns_name(topo.prefix, router_id)
    # Someone adds a stray address and an extra agent-owned route; the next
    # changed config removes them again.
    sh("ip", "-n", netns, "addr", "add", "10.10.0.99/24", "dev", "g-net1")
    cfg2 = make_config(router_id, 2, ["p1"])
    cfg2.routes.add(destination="192.0.2.0/24", gateway="10.10.0.254", interface="g-net1")
    assert agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg2)).status.applied_generation == 2
    addrs = sh("ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "g-net1")
    assert "10.10.0.99" not in addrs
    assert "10.10.0.1/24" in addrs
    assert "192.0.2.0/24 via 10.10.0.254" in sh("ip", "-n", netns, "route")
    cfg3 = make_config(router_id, 3, ["p1"])
    assert agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg3)).status.applied_generation == 3
    routes = sh("ip", "-n", netns, "route")
    assert "192.0.2.0/24" not in routes
    assert "default via 203.0.113.1 dev pub0" in routes
    assert os.path.exists(os.path.join(agent.agent.state_dir, "routers", router_id, "config.pb"))
