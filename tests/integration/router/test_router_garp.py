"""A public address that moves to another router is announced: the upstream
gateway's neighbour entry follows it at once (no traffic to the old MAC)."""

from __future__ import annotations

import pytest

from tests.lib.routerlab import (
    PUBLIC_IP,
    InProcessAgent,
    Topology,
    make_config,
    neighbour,
    sh,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_an_address_taken_over_from_another_router_is_announced(
        agent: InProcessAgent, topo: Topology) -> None:
    topo.internet()
    up = f"{topo.prefix}-up"
    first = make_config("garp-a", 1, [])
    assert agent.agent.apply(first).applied_generation == 1
    sh("ip", "netns", "exec", up, "busybox", "ping", "-c1", "-W2", PUBLIC_IP)
    assert neighbour(up, PUBLIC_IP) == "02:00:00:00:00:10"
    agent.agent.delete("garp-a", keep_leases=False)

    # Another router takes the address, with its own MACs.
    second = make_config("garp-b", 1, [])
    second.interfaces[0].mac = "02:00:00:00:00:20"
    second.interfaces[1].mac = "02:00:00:00:01:02"
    assert agent.agent.apply(second).applied_generation == 1
    # No packet to the address has been sent: only the announcement moves it.
    wait_for(lambda: neighbour(up, PUBLIC_IP) == "02:00:00:00:00:20", timeout=5,
             what="the uplink's neighbour entry to follow the address")
    sh("ip", "netns", "exec", up, "busybox", "ping", "-c1", "-W2", PUBLIC_IP)
