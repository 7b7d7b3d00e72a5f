"""The router agent applies edge rules as element updates of the running
table (no reload), applies an unchanged config as a no-op, and rejects a bad
rule whole, naming it, with nothing applied."""

from __future__ import annotations

import json

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.runtime import router_netns_name
from tests.lib.routerlab import InProcessAgent, make_config, sh

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
        agent: InProcessAgent) -> None:
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

    # A bad rule: left out and named, the rest of the generation applied
    # (pf0 is back) in the same table.
    bad = edge_config(router_id, 4, 501)
    bad.port_forwards.append(pb.PortForwardRule(
        id="pfbad", public_ip=EIP, protocol="tcp", public_port_start=2000,
        public_port_end=2000, private_ip="192.0.2.9", private_port_start=80,
        private_port_end=80))
    status = agent.agent.apply(bad)
    assert (status.applied_generation, status.rejected_generation) == (4, 0)
    assert [(o.kind, o.id) for o in status.objects if not o.ok] == [("portforward", "pfbad")]
    assert map_keys(ns) == set(range(1000, 1501))
    assert table_handle(ns) == handle

    # Many rules less at once: still one transaction of element deletes.
    assert agent.agent.apply(edge_config(router_id, 5, 10)).applied_generation == 5
    assert map_keys(ns) == set(range(1000, 1010))
    assert table_handle(ns) == handle


def test_edge_delta_in_place_stale_refused_journaled_and_adopted_on_restart(
        agent: InProcessAgent, topo) -> None:
    from cloudnet.router.v1 import edge_pb2 as epb
    from cloudnet.router.v1 import edge_pb2_grpc

    from router.agent.registry import RouterRegistry
    from router.services.nftables import journal as edge_journal

    router_id = "edge-delta2"
    ns = router_netns_name(agent.agent.netns_prefix, router_id)
    assert agent.agent.apply(edge_config(router_id, 1, 100)).applied_generation == 1
    handle = table_handle(ns)
    runtime = agent.agent.runtime(router_id)
    applies = dict(runtime.service_applies)
    stub = edge_pb2_grpc.RouterEdgeStub(agent.channel)

    def send(base: int, gen: int, removed=(), forwards=()) -> epb.ApplyEdgeDeltaResponse:
        return stub.ApplyEdgeDelta(epb.ApplyEdgeDeltaRequest(delta=epb.EdgeDelta(
            router_id=router_id, base_generation=base, generation=gen,
            removed=[epb.EdgeObjectRef(kind=k, id=i) for k, i in removed],
            port_forwards=list(forwards))), timeout=60)

    new = pb.PortForwardRule(id="pfnew", public_ip=EIP, protocol="tcp", public_port_start=3000,
                             public_port_end=3000, private_ip="10.10.0.5",
                             private_port_start=80, private_port_end=80)
    moved = pb.PortForwardRule(id="pf1", public_ip=EIP, protocol="tcp", public_port_start=4001,
                               public_port_end=4001, private_ip="10.10.0.6",
                               private_port_start=81, private_port_end=81)
    r = send(1, 2, removed=[("portforward", "pf0")], forwards=[new, moved])
    assert (r.stale, r.applied_generation, r.rejected_generation) == (False, 2, 0), r.last_error
    want = set(range(1002, 1100)) | {3000, 4001}
    assert map_keys(ns) == want
    assert table_handle(ns) == handle
    # In place: no service's apply ran, the running config is the delta's result.
    assert runtime.service_applies == applies
    assert runtime.config is not None
    assert runtime.config.generation == 2
    assert {f.id for f in runtime.config.port_forwards} == (
        {f"pf{i}" for i in range(1, 100)} | {"pfnew"})

    # Not on top of what the router runs: stale, nothing changes.
    assert send(1, 3, forwards=[new]).stale
    # A conflict with a rule that stays: refused naming the rule, nothing changes.
    clash = pb.PortForwardRule(id="pfclash", public_ip=EIP, protocol="tcp",
                               public_port_start=1050, public_port_end=1050,
                               private_ip="10.10.0.5", private_port_start=80, private_port_end=80)
    r = send(2, 3, forwards=[clash])
    assert r.rejected_generation == 3
    assert r.applied_generation == 2
    assert [(o.kind, o.id, o.ok) for o in r.objects] == [("portforward", "pfclash", False)]
    assert "overlap port forward 'pf50'" in r.last_error
    assert map_keys(ns) == want
    assert runtime.config.generation == 2

    # The journal holds the delta; a restarted agent adopts config.pb + journal.
    assert [d.generation for d in edge_journal.read_journal(
        runtime.ctx.paths.edge_journal)] == [2]
    restarted = RouterRegistry(agent.agent.state_dir, netns_prefix=agent.agent.netns_prefix,
                               fabric_netns=topo.fabric.netns, agent_id="test2")
    restarted.start()
    again = restarted.runtime(router_id)
    assert again.config is not None
    assert again.config.generation == 2
    assert {f.id for f in again.config.port_forwards} == {
        f.id for f in runtime.config.port_forwards}
    assert map_keys(ns) == want
    # Like a new agent process, the restarted one knows nothing it loaded:
    # it loaded the table whole.
    handle = table_handle(ns)

    # A full push of the same rules is no element change; then deltas go on.
    full = edge_config(router_id, 4, 100)
    del full.port_forwards[0:2]
    full.port_forwards.extend([new, moved])
    assert agent.agent.apply(full).applied_generation == 4
    assert map_keys(ns) == want
    assert table_handle(ns) == handle
    r = send(4, 5, removed=[("portforward", "pfnew")])
    assert r.applied_generation == 5
    assert map_keys(ns) == want - {3000}

    # The table deleted behind the agent's back: the element update fails its
    # dry run, the delta answers stale (nothing half-recorded), and the full
    # push that follows loads the whole table again.
    sh("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "cloudnet")
    moved2 = pb.PortForwardRule()
    moved2.CopyFrom(moved)
    moved2.public_port_start = moved2.public_port_end = 4002
    assert send(5, 6, forwards=[moved2]).stale
    full.generation = 6
    keep = [f for f in full.port_forwards if f.id != "pfnew"]
    del full.port_forwards[:]
    full.port_forwards.extend(keep)
    assert agent.agent.apply(full).applied_generation == 6
    assert map_keys(ns) == want - {3000}
