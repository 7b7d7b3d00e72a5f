"""A router that routes no IPv6 has no IPv6 on its links: no link-local
address, so nothing to announce (listener reports, duplicate-address
probes) to every router on the provider segment. Made dual-stack, its links
take their link-local and global addresses and it advertises; made
IPv4-only again, they are gone."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc
from cloudnet.router.v1 import routing_pb2 as rpb

from common.fabric.linuxbridge import LinuxBridgeFabric
from router.agent.registry import RouterRegistry
from router.agent.server import create_server
from router.runtime import router_netns_name
from tests.lib.routerlab import InProcessAgent, Topology, make_config, sh

pytestmark = pytest.mark.integration


@pytest.fixture
def lab() -> Iterator[tuple[InProcessAgent, str, str]]:
    prefix = f"q6{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    state_dir = tempfile.mkdtemp(prefix="cn-router-q6-", dir="/tmp")
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
    router_id = uuid.uuid4().hex
    try:
        yield agent, router_id, router_netns_name(prefix, router_id)
    finally:
        channel.close()
        server.stop(grace=None)
        with contextlib.suppress(Exception):
            registry.delete(router_id, keep_leases=False)
        topo.cleanup()


def apply(agent: InProcessAgent, cfg: pb.RouterConfig) -> None:
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status
    assert status.applied_generation == cfg.generation, status.last_error
    assert [o for o in status.objects if not o.ok] == []


def ipv6_addresses(ns: str) -> dict[str, list[str]]:
    out = json.loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show") or "[]")
    return {link["ifname"]: sorted(a["local"] for a in link.get("addr_info", []))
            for link in out if link.get("addr_info")}


def dual_stack(router_id: str, generation: int) -> pb.RouterConfig:
    cfg = make_config(router_id, generation, ["p1"], ipv6_cidr="2001:db8:10::/64",
                      ipv6_gateway="2001:db8:10::1", ipv6_mode="slaac")
    cfg.ipv6_uplink.CopyFrom(rpb.Ipv6Uplink(address="2001:db8:ffff::10/64",
                                            gateway="2001:db8:ffff::1"))
    return cfg


def test_ipv6_is_on_a_routers_links_only_while_it_routes_ipv6(
        lab: tuple[InProcessAgent, str, str]) -> None:
    agent, router_id, ns = lab
    apply(agent, make_config(router_id, 1, ["p1"]))
    assert ipv6_addresses(ns) == {}

    apply(agent, dual_stack(router_id, 2))
    have = ipv6_addresses(ns)
    assert "2001:db8:10::1" in have.get("g-net1", [])
    assert "2001:db8:ffff::10" in have.get("pub0", [])
    # Link-local addresses too: router advertisements are sent from them.
    assert any(a.startswith("fe80:") for a in have.get("g-net1", [])), have

    apply(agent, make_config(router_id, 3, ["p1"]))
    assert ipv6_addresses(ns) == {}
