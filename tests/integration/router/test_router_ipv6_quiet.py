"""A router that routes no IPv6 has no IPv6 on its links: no link-local
address, so nothing to announce (listener reports, duplicate-address
probes) to every router on the provider segment. Made dual-stack, its links
take their link-local and global addresses and it advertises; made
IPv4-only again, they are gone."""

from __future__ import annotations

import json
import uuid

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import routing_pb2 as rpb

from router.runtime import router_netns_name
from tests.lib.routerlab import InProcessAgent, Topology, make_config, sh

pytestmark = pytest.mark.integration


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
        topo: Topology, agent: InProcessAgent) -> None:
    router_id = uuid.uuid4().hex
    ns = router_netns_name(topo.prefix, router_id)
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
