"""The router agent applies edge rules as element updates of the running
table (no reload), applies an unchanged config as a no-op, and rejects a bad
rule whole, naming it, with nothing applied."""

from __future__ import annotations

import json

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.runtime import router_netns_name
from tests.integration.router.conftest import agent, topo  # noqa: F401
from tests.integration.router.routerlab import InProcessAgent, make_config, sh

pytestmark = pytest.mark.integration

EIP = "203.0.113.77"


def edge_config(router_id: str, generation: int, forwards: int) -> pb.RouterConfig:
    cfg = make_config(router_id, generation, [])
    cfg.interfaces[0].addresses.append(f"{EIP}/32")
    cfg.public_addresses.append(pb.PublicAddress(public_ip_id="ip1", ip=EIP, interface="pub0"))
    cfg.port_forwards.extend(
        pb.PortForwardRule(id=f"pf{i}", public_ip=EIP, protocol="tcp",
                           public_port_start=1000 + i, public_port_end=1000 + i,
                           private_ip="10.10.0.5", private_port_start=80, private_port_end=80)
        for i in range(forwards))
    cfg.ingress_rules.append(pb.IngressRule(id="fw1", public_ip=EIP, protocol="icmp",
                                            icmp_type=-1, icmp_code=-1))
    return cfg


def table_handle(ns: str) -> int:
    out = json.loads(sh("ip", "netns", "exec", ns, "nft", "-j", "list", "tables"))
    return next(t["table"]["handle"] for t in out["nftables"]
                if "table" in t and t["table"]["name"] == "cloudnet")


def map_keys(ns: str) -> set[int]:
    out = json.loads(sh("ip", "netns", "exec", ns, "nft", "-j", "list", "map", "inet",
                        "cloudnet", "pf_dnat"))
    elems = next(x["map"] for x in out["nftables"] if "map" in x).get("elem", [])
    return {e[0]["concat"][2] if "concat" in e[0] else e[0]["elem"]["val"]["concat"][2]
            for e in elems}


def test_one_rule_is_an_element_update_and_the_same_config_a_no_op(
        agent: InProcessAgent) -> None:  # noqa: F811
    router_id = "edge-delta"
    ns = router_netns_name(agent.agent.netns_prefix, router_id)
    status = agent.agent.apply(edge_config(router_id, 1, 500))
    assert status.applied_generation == 1, status.last_error
    handle = table_handle(ns)
    assert map_keys(ns) == set(range(1000, 1500))
    runtime = agent.agent.runtime(router_id)

    # One rule more, one less: the same table (no reload), the elements changed.
    cfg = edge_config(router_id, 2, 501)
    del cfg.port_forwards[0]
    status = agent.agent.apply(cfg)
    assert status.applied_generation == 2, status.last_error
    assert table_handle(ns) == handle
    assert map_keys(ns) == set(range(1001, 1501))
    rules = sh("ip", "netns", "exec", ns, "nft", "list", "chain", "inet", "cloudnet",
               "edge_ingress")
    assert 'comment "cn:fw-default-drop"' in rules

    # The same config again (new generation): no service is touched.
    applies = dict(runtime.service_applies)
    cfg.generation = 3
    assert agent.agent.apply(cfg).applied_generation == 3
    assert runtime.service_applies == applies

    # A bad rule: rejected whole and named; the table keeps what it had.
    bad = edge_config(router_id, 4, 501)
    bad.port_forwards.append(pb.PortForwardRule(
        id="pfbad", public_ip=EIP, protocol="tcp", public_port_start=2000,
        public_port_end=2000, private_ip="192.0.2.9", private_port_start=80,
        private_port_end=80))
    status = agent.agent.apply(bad)
    assert status.rejected_generation == 4 and status.applied_generation == 3
    assert any(o.kind == "portforward" and o.id == "pfbad" and not o.ok for o in status.objects)
    assert map_keys(ns) == set(range(1001, 1501)) and table_handle(ns) == handle

    # Many rules less at once: still one transaction of element deletes.
    assert agent.agent.apply(edge_config(router_id, 5, 10)).applied_generation == 5
    assert map_keys(ns) == set(range(1000, 1010)) and table_handle(ns) == handle
