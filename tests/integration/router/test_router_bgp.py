"""BGP from the router to a stock speaker of the provider's (FRR with its
own plain config, aio/bgp_edge.py) on the provider network: the edge's BGP
table and kernel routes show exactly the router's routed prefixes (a routed
IPv4 network, an IPv6 /64), the router reports its sessions, the same config
again touches nothing, and a prefix made non-routed or a router deleted is
withdrawn. One topology for the module."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc, diag_pb2, diag_pb2_grpc
from cloudnet.router.v1 import routing_pb2 as rpb

from aio.bgp_edge import BgpEdge, EdgeBgpConfig
from common.fabric.linuxbridge import LinuxBridgeFabric
from netmgr.model.ipv6_rules import eui64
from router.agent.registry import RouterRegistry
from router.agent.server import create_server
from router.services import bgp as bgp_service
from tests.lib.routerlab import (
    PUBLIC_GW,
    PUBLIC_IP,
    InProcessAgent,
    Topology,
    make_config,
    sh,
    wait_for,
)

pytestmark = pytest.mark.integration

EDGE_ASN, ZONE_ASN = 64496, 64512
PUBLIC6, EDGE6 = "2001:db8:ffff::/64", "2001:db8:ffff::1"
ROUTER6 = eui64("02:00:00:00:00:10", PUBLIC6)
NET1_V6, ROUTED = "2001:db8:10::/64", "198.18.0.0/24"


def router_config(router_id: str, generation: int, routed: bool = True) -> pb.RouterConfig:
    cfg = make_config(router_id, generation, ["p1"])
    net1 = cfg.guest_networks[0]
    net1.ipv6_cidr, net1.ipv6_gateway, net1.ipv6_mode = NET1_V6, "2001:db8:10::1", "slaac"
    cfg.interfaces.append(pb.Interface(
        name="g-net3", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:03",
        addresses=["198.18.0.1/24"], segment_id=102, network_id="net3"))
    cfg.guest_networks.append(pb.GuestNetwork(
        network_id="net3", interface="g-net3", cidr=ROUTED, gateway="198.18.0.1",
        lease_seconds=3600, routed=routed))
    cfg.ipv6_uplink.CopyFrom(rpb.Ipv6Uplink(address=f"{ROUTER6}/64", gateway=EDGE6))
    prefixes = [NET1_V6, *([ROUTED] if routed else [])]
    cfg.bgp.CopyFrom(rpb.Bgp(
        asn=ZONE_ASN, router_id=PUBLIC_IP, prefixes=sorted(prefixes),
        neighbors=[rpb.BgpNeighbor(address=PUBLIC_GW, asn=EDGE_ASN),
                   rpb.BgpNeighbor(address=EDGE6, asn=EDGE_ASN)]))
    return cfg


@dataclass
class Lab:
    topo: Topology
    agent: InProcessAgent
    edge: BgpEdge
    up: str


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    prefix = f"bg{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    state_dir = tempfile.mkdtemp(prefix="cn-router-bgp-", dir="/tmp")
    os.chmod(state_dir, 0o755)
    fabric = LinuxBridgeFabric(f"{prefix}-fab")
    topo = Topology(prefix, state_dir, fabric, namespaces=[fabric.netns])
    registry = RouterRegistry(os.path.join(state_dir, "agent"), netns_prefix=prefix,
                              fabric_netns=fabric.netns, agent_id="test")
    registry.start()
    sock = f"unix://{state_dir}/agent.sock"
    server, _ = create_server(sock, registry)
    channel = grpc.insecure_channel(sock)
    agent = InProcessAgent(registry, agent_pb2_grpc.RouterAgentStub(channel), server, channel)
    up = topo.ns("up")
    sh("ip", "netns", "exec", up, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0")
    fabric.plug(f"{prefix}up"[:15], 0, up, "eth0", "02:00:00:00:ff:01")
    sh("ip", "-n", up, "addr", "add", f"{PUBLIC_GW}/24", "dev", "eth0")
    sh("ip", "-n", up, "-6", "addr", "add", f"{EDGE6}/64", "dev", "eth0")
    edge = BgpEdge(up, os.path.join(state_dir, "edge-frr"), EdgeBgpConfig(
        asn=EDGE_ASN, router_id=PUBLIC_GW, routers_asn=ZONE_ASN,
        listen_ranges=("203.0.113.0/24", PUBLIC6)))
    try:
        edge.start()
        yield Lab(topo, agent, edge, up)
    finally:
        channel.close()
        server.stop(grace=None)
        for rt in registry.runtimes():
            with contextlib.suppress(Exception):
                registry.delete(rt.ctx.router_id, keep_leases=False)
        edge.stop()
        topo.cleanup()


def apply(agent: InProcessAgent, cfg: pb.RouterConfig) -> pb.RouterStatus:
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status
    assert status.applied_generation == cfg.generation, status.last_error
    return status


@pytest.fixture(scope="module")
def router_id(lab: Lab) -> str:
    rid = str(uuid.uuid4())
    apply(lab.agent, router_config(rid, 1))
    return rid


def test_a_router_without_routed_prefixes_runs_no_bgpd_and_is_healthy(lab: Lab) -> None:
    rid = str(uuid.uuid4())
    cfg = router_config(rid, 1)
    cfg.ClearField("bgp")
    apply(lab.agent, cfg)
    rt = lab.agent.agent.runtime(rid)
    assert bgp_service.running_pid(rt.ctx) is None
    assert rt.check_health() == []
    # Gone before the module's router (same addresses) is made.
    lab.agent.stub.DeleteRouter(pb.DeleteRouterRequest(router_id=rid))


def test_the_edge_learns_exactly_the_routers_prefixes_and_routes_by_them(
        lab: Lab, router_id: str) -> None:
    wait_for(lambda: set(lab.edge.routes()) == {ROUTED, NET1_V6}, timeout=60,
             what="the router's prefixes in the edge's BGP table")
    routes = lab.edge.routes()
    assert routes[ROUTED] == PUBLIC_IP
    assert routes[NET1_V6] == ROUTER6
    # zebra put them in the edge's kernel table: the edge routes by them.
    assert f"{ROUTED} nhid" in sh("ip", "-n", lab.up, "route", "show", "proto", "bgp") or \
        f"{ROUTED} via {PUBLIC_IP}" in sh("ip", "-n", lab.up, "route", "show", "proto", "bgp")
    assert NET1_V6 in sh("ip", "-n", lab.up, "-6", "route", "show", "proto", "bgp")


def test_the_router_reports_its_sessions(lab: Lab, router_id: str) -> None:
    def established() -> bool:
        status = lab.agent.stub.GetRouterStatus(pb.GetRouterStatusRequest(router_id=router_id))
        return [(s.peer, s.state, s.prefixes_sent) for s in status.bgp_sessions] == [
            (EDGE6, "Established", 1), (PUBLIC_GW, "Established", 1)]

    wait_for(established, timeout=60, what="both sessions established")
    status = lab.agent.stub.GetRouterStatus(pb.GetRouterStatusRequest(router_id=router_id))
    health = next(s for s in status.services if s.name == "bgp")
    assert health.healthy
    assert "Established" in health.detail


def sessions_established(lab: Lab) -> dict[str, int]:
    """Each dynamic neighbour of the edge -> how often its session came up."""
    neighbors = json.loads(lab.edge.vtysh("show bgp neighbors json"))
    return {addr: int(n.get("connectionsEstablished", 0)) for addr, n in neighbors.items()
            if n.get("bgpState") == "Established"}


def test_debug_show_bgp_lists_the_sessions(lab: Lab, router_id: str) -> None:
    diag = diag_pb2_grpc.RouterDiagnosticsStub(lab.agent.channel)
    shown = diag.Show(diag_pb2.ShowRequest(router_id=router_id, kind=diag_pb2.SHOW_KIND_BGP))
    assert [(s.peer, s.peer_asn, s.state, s.prefixes_sent) for s in shown.bgp_sessions] == [
        (EDGE6, EDGE_ASN, "Established", 1), (PUBLIC_GW, EDGE_ASN, "Established", 1)]


def test_the_same_config_again_changes_nothing(lab: Lab, router_id: str) -> None:
    rt = lab.agent.agent.runtime(router_id)
    pid = bgp_service.running_pid(rt.ctx)
    assert pid is not None
    before = sessions_established(lab)
    assert sorted(before) == sorted([PUBLIC_IP, ROUTER6])
    apply(lab.agent, router_config(router_id, 2))
    assert bgp_service.running_pid(rt.ctx) == pid
    # Neither session was torn down and set up again.
    assert sessions_established(lab) == before


def test_a_network_made_non_routed_is_withdrawn_alone(lab: Lab, router_id: str) -> None:
    rt = lab.agent.agent.runtime(router_id)
    pid = bgp_service.running_pid(rt.ctx)
    apply(lab.agent, router_config(router_id, 3, routed=False))
    wait_for(lambda: set(lab.edge.routes()) == {NET1_V6}, timeout=30,
             what="the routed network withdrawn")
    assert bgp_service.running_pid(rt.ctx) == pid  # changed in place, sessions kept
    apply(lab.agent, router_config(router_id, 4))
    wait_for(lambda: set(lab.edge.routes()) == {ROUTED, NET1_V6}, timeout=30,
             what="the routed network announced again")


def test_a_killed_bgpd_is_repaired_and_announces_again(lab: Lab, router_id: str) -> None:
    rt = lab.agent.agent.runtime(router_id)
    pid = bgp_service.running_pid(rt.ctx)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: bgp_service.running_pid(rt.ctx) is None, what="bgpd gone")
    assert rt.repair() == ["bgp"]
    assert bgp_service.running_pid(rt.ctx) not in (None, pid)
    wait_for(lambda: set(lab.edge.routes()) == {ROUTED, NET1_V6}, timeout=60,
             what="the prefixes announced again")
    assert rt.repair() == []


def test_a_deleted_router_is_withdrawn(lab: Lab, router_id: str) -> None:
    wait_for(lambda: ROUTED in lab.edge.routes(), timeout=30, what="the prefixes")
    lab.agent.stub.DeleteRouter(pb.DeleteRouterRequest(router_id=router_id))
    wait_for(lambda: lab.edge.routes() == {}, timeout=30, what="every prefix withdrawn")
    assert ROUTED not in sh("ip", "-n", lab.up, "route", "show")
