"""Stopping routers by their own records: the all-in-one's ``down`` (after its
agent stopped, leaving the routers running) stops every process of every
router, charon included (its command line names no router), and so does
DeleteRouter; nothing is left running in a deleted namespace."""

from __future__ import annotations

import uuid

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import vpn_pb2 as vpb

from aio.allinone import AllInOne
from router.lib import proc
from router.runtime import router_netns_name
from tests.lib.routerlab import PUBLIC_IP, InProcessAgent, Topology, make_config, sh, wait_for

pytestmark = pytest.mark.integration


def vpn_config(router_id: str) -> pb.RouterConfig:
    cfg = make_config(router_id, 1, ["p1"])
    cfg.vpn_connections.append(vpb.VpnConnection(
        id="c1", local_address=PUBLIC_IP, peer_address="198.51.100.200",
        local_cidrs=["10.10.0.0/24"], peer_cidrs=["172.16.1.0/24"],
        psk="stop-test-Key_0123456789", ike_version=2))
    return cfg


def router_processes(topo: Topology, router_id: str) -> dict[int, list[str]]:
    """pid -> command line of every process in the router's namespace."""
    ns = router_netns_name(topo.prefix, router_id)
    return {int(p): proc.cmdline(int(p)) for p in sh("ip", "netns", "pids", ns).split()}


def start_router(topo: Topology, agent: InProcessAgent) -> tuple[str, dict[int, list[str]]]:
    router_id = uuid.uuid4().hex
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=vpn_config(router_id))).status
    assert (status.applied_generation, status.last_error) == (1, "")
    wait_for(lambda: {s.name: s.healthy for s in agent.stub.GetRouterStatus(
        pb.GetRouterStatusRequest(router_id=router_id)).services}.get("strongswan"),
        20, "charon")
    running = router_processes(topo, router_id)
    commands = [c[0] for c in running.values() if c]
    assert "dnsmasq" in commands, running
    assert "/usr/lib/ipsec/charon" in commands, running
    return router_id, running


def test_stopping_the_all_in_one_leaves_no_process_of_its_routers(
        topo: Topology, agent: InProcessAgent) -> None:
    _, running = start_router(topo, agent)
    # The agent stops first; by design its routers keep running without it.
    agent.server.stop(grace=None)
    assert all(proc.is_alive(p) for p in running)

    AllInOne(insecure=True, prefix=topo.prefix, state_dir=topo.state_dir, fabric_kind="linuxbridge",
             admin_token="unused").down()

    left = {p: c for p, c in running.items() if proc.is_alive(p)}
    assert left == {}


def test_delete_router_leaves_nothing_running(topo: Topology, agent: InProcessAgent) -> None:
    router_id, running = start_router(topo, agent)
    agent.stub.DeleteRouter(pb.DeleteRouterRequest(router_id=router_id))
    left = {p: c for p, c in running.items() if proc.is_alive(p)}
    assert left == {}
