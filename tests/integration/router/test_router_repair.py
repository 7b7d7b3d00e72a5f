"""The agent's health pass finds a router's nftables table changed behind its
back (flushed, a rule deleted, deleted whole), says so in the router status,
and loads the table again from the last good config: DHCP, DNS and source NAT
work again."""

from __future__ import annotations

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


def dig(ns: str, name: str) -> list[str]:
    return sh("ip", "netns", "exec", ns, "dig", "+short", "+time=1", "+tries=1",
              "@10.10.0.1", name, check=False).split()


def snat_source(guest: str, inet: str) -> str:
    """The address a connection from the guest arrives from on the internet host."""
    server = subprocess.Popen(["ip", "netns", "exec", inet, sys.executable, "-c", PEER_SERVER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        sh("ip", "netns", "exec", guest, sys.executable, "-c",
           f"import socket; socket.create_connection(('{INET_HOST}', 8080), timeout=3).close()")
        return server.stdout.readline().strip()
    finally:
        server.kill()
        server.wait()


def nft_health(agent: InProcessAgent, router_id: str) -> pb.ServiceStatus:
    status = agent.stub.GetRouterStatus(pb.GetRouterStatusRequest(router_id=router_id))
    return next(s for s in status.services if s.name == "nftables")


@pytest.mark.parametrize("tamper", [
    ["flush", "table", "inet", "cloudnet"],
    ["flush", "chain", "inet", "cloudnet", "input"],
    ["delete", "table", "inet", "cloudnet"],
])
def test_a_table_changed_behind_the_agents_back_is_reported_and_repaired(
        topo: Topology, agent: InProcessAgent, tmp_path: object, tamper: list[str]) -> None:
    inet = topo.internet()
    router_id = uuid.uuid4().hex
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(
        config=make_config(router_id, 1, ["p1", "p2"]))).status
    assert status.applied_generation == 1, status.last_error
    guest = topo.guest("p1")
    assert topo.dhcp(guest, str(tmp_path))["ip"] == HOSTS["p1"][1]
    topo.configure_guest(guest, HOSTS["p1"][1])
    assert dig(guest, f"vm2.{DOMAIN}") == [HOSTS["p2"][1]]
    assert nft_health(agent, router_id).healthy
    assert agent.agent.repair_all() == {}  # nothing to repair: nothing reloaded

    sh("ip", "netns", "exec", router_netns_name(topo.prefix, router_id), "nft", *tamper)

    health = nft_health(agent, router_id)
    assert not health.healthy
    assert "differs from what the agent loaded" in health.detail or "missing" in health.detail
    assert agent.agent.repair_all() == {router_id: ["nftables"]}
    health = nft_health(agent, router_id)
    assert health.healthy
    assert "repaired 1 time" in health.detail
    assert topo.dhcp(guest, str(tmp_path))["ip"] == HOSTS["p1"][1]
    assert dig(guest, f"vm2.{DOMAIN}") == [HOSTS["p2"][1]]
    assert snat_source(guest, inet) == PUBLIC_IP
    assert agent.agent.repair_all() == {}


def test_an_unchanged_table_is_checked_without_reading_its_rules(
        topo: Topology, agent: InProcessAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    """The health pass asks the namespace's ruleset generation; the table's
    chains and rules are read (and compared) only when it moved on."""
    from router.lib import nftshape

    router_id = uuid.uuid4().hex
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(
        config=make_config(router_id, 1, ["p1", "p2"]))).status
    assert status.applied_generation == 1, status.last_error
    reads: list[str] = []
    real = nftshape.fingerprint

    def counted(table: str) -> str | None:
        reads.append(table)
        return real(table)

    monkeypatch.setattr(nftshape, "fingerprint", counted)
    for _ in range(3):
        assert nft_health(agent, router_id).healthy
    assert reads == []
    ns = router_netns_name(topo.prefix, router_id)
    # An element added moves the generation on, not the shape: read once.
    set_type = sh("ip", "netns", "exec", ns, "nft", "-j", "list", "set", "inet", "cloudnet",
                  "edge_ips")
    assert '"ipv4_addr"' in set_type
    sh("ip", "netns", "exec", ns, "nft", "add", "element", "inet", "cloudnet", "edge_ips",
       "{ 192.0.2.77 }")
    assert nft_health(agent, router_id).healthy
    assert nft_health(agent, router_id).healthy
    assert len(reads) == 1
    # A rule added behind the agent's back is seen at the next check.
    sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "cloudnet", "input", "accept")
    health = nft_health(agent, router_id)
    assert not health.healthy
    assert "differs from what the agent loaded" in health.detail
    assert len(reads) == 2
