"""netmgr's side of edge deltas (pure logic and a recording agent behind a
real gRPC server): a delta adding one object carries exactly that object's
part of the full config, changes merge in order, a gap or a stale/refused
answer falls back to a full push, an applied delta moves the router's
generation."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from cloudnet.router.v1 import edge_pb2 as epb
from cloudnet.router.v1 import edge_pb2_grpc

from netmgr.model import edge as me
from netmgr.model.core import Status
from netmgr.reconcile import delta_push as ed
from netmgr.reconcile.configbuild import edge
from netmgr.reconcile.configbuild.edge import EdgeRule
from netmgr.reconcile.configbuild.router import build_router_config
from netmgr.reconcile.store_view import DeltaStore
from tests.lib.router_snapshots import NET, NOW, ZONE, port, snapshot

PF = me.PortForward(
    status=Status(id="pf1", tenant_id="t1", generation=3, error="", created_at=NOW),
    network_id=NET.id, public_ip_id="ip1", protocol="tcp",
    public_port=80, public_port_end=81, port_id="p1", private_port=8080, private_port_end=8081,
    source_cidrs=("192.0.2.0/24",), public_ip="203.0.113.20", private_ip="10.1.1.5")
NAT = me.StaticNat(status=Status(id="s1", tenant_id="t1", generation=3, error="", created_at=NOW),
                   network_id=NET.id, public_ip_id="ip2", port_id="p2",
                   public_ip="203.0.113.21", private_ip="10.1.1.6")
FW_IN = me.FirewallRule(
    status=Status(id="fw1", tenant_id="t1", generation=3, error="", created_at=NOW),
    direction="ingress", network_id=NET.id, public_ip_id="ip1",
    protocol="icmp", port=0, port_end=0, icmp_type=8, icmp_code=-1, cidrs=("0.0.0.0/0",),
    public_ip="203.0.113.20")
FW_EG = dataclasses.replace(FW_IN, status=dataclasses.replace(FW_IN.status, id="fw2"),
                            direction="egress", public_ip_id="", public_ip="",
                            protocol="tcp", port=443, port_end=443, icmp_type=-1)


def test_changes_merge_in_order_last_word_wins() -> None:
    a = edge.port_forward_rule(PF)
    a2 = edge.port_forward_rule(dataclasses.replace(PF, private_port=9000, private_port_end=9001))
    c = edge.static_nat_rule(NAT)
    delta = ed.merge("r", 4, 8, [
        ed.Change((), (a,)), ed.Change((("portforward", "pf1"),), (a2,)),
        ed.Change((("firewall", "fw9"),), ()), ed.Change((), (c,)),
        ed.Change((("staticnat", "s1"),), ())])
    assert (delta.base_generation, delta.generation) == (4, 8)
    assert {(r.kind, r.id) for r in delta.removed} == {
        ("portforward", "pf1"), ("firewall", "fw9"), ("staticnat", "s1")}
    assert list(delta.port_forwards) == [a2]
    assert not delta.static_nats


class Store:
    """The edge-delta path's part of the store (checked against it by mypy)."""

    def __init__(self) -> None:
        self.desired = 5
        self.applied: list[int] = []

    def router_head(self, router_id: str) -> tuple[str, int, str]:
        return "local", self.desired, "netns"

    def network_cidr(self, network_id: str) -> str:
        return NET.cidr if network_id == NET.id else ""

    def record_edge_delta_applied(self, router_id: str, applied_generation: int) -> None:
        self.applied.append(applied_generation)

    def guest_metadata_parts(self, port_id: str) -> tuple[str, str, tuple[str, str] | None]:
        # p2 has the static NAT NAT; p1 the key pair KEY.
        return (ZONE.name, NAT.public_ip if port_id == NAT.port_id else "",
                KEY if port_id == "p1" else None)


class Agent(edge_pb2_grpc.RouterEdgeServicer):
    def __init__(self) -> None:
        self.runs = 3
        self.seen: list[epb.EdgeDelta] = []
        self.epochs: list[int] = []

    def ApplyEdgeDelta(self, request: epb.ApplyEdgeDeltaRequest,
                       context: grpc.ServicerContext) -> epb.ApplyEdgeDeltaResponse:
        d = request.delta
        self.seen.append(d)
        self.epochs.append(request.lease_epoch)
        if d.base_generation != self.runs:
            return epb.ApplyEdgeDeltaResponse(stale=True, applied_generation=self.runs)
        self.runs = d.generation
        return epb.ApplyEdgeDeltaResponse(applied_generation=d.generation)

    def GetEdgeCounters(self, request: epb.GetEdgeCountersRequest,
                        context: grpc.ServicerContext) -> epb.GetEdgeCountersResponse:
        raise NotImplementedError("not used by these tests")



@contextlib.contextmanager
def serving_agent() -> Iterator[tuple[Agent, grpc.Channel]]:
    """A router agent's edge service on a loopback port, and a channel to it."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = Agent()
    edge_pb2_grpc.add_RouterEdgeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, channel
    finally:
        channel.close()
        server.stop(0)


@pytest.fixture
def agent() -> Iterator[tuple[Agent, grpc.Channel]]:
    with serving_agent() as served:
        yield served


@pytest.fixture
def two_agents() -> Iterator[list[tuple[Agent, grpc.Channel]]]:
    """A redundant router's two instances' agents."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serving_agent()) for _ in range(2)]


KEY = ("laptop", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs7cQdJ3m1mI3h1w0b0c4mQ3xC1uYy3cMuR2x1tY1a9")


def deltas_through(channel: grpc.Channel, store: DeltaStore) -> ed.EdgeDeltas:
    return ed.EdgeDeltas(store, lambda router_id, host, backend: channel)


@pytest.mark.parametrize(("obj", "alone", "config_part"), [
    (NAT, me.EdgeSnapshot(static_nats=(NAT,)), "static_nats"),
    (PF, me.EdgeSnapshot(port_forwards=(PF,)), "port_forwards"),
    (FW_IN, me.EdgeSnapshot(firewall_rules=(FW_IN,)), "ingress_rules"),
    (FW_EG, me.EdgeSnapshot(firewall_rules=(FW_EG,)), "egress_rules"),
], ids=["static_nat", "port_forward", "ingress", "egress"])
def test_a_delta_adding_one_object_carries_that_objects_part_of_the_full_config(
        agent: tuple[Agent, grpc.Channel], obj: EdgeRule, alone: me.EdgeSnapshot,
        config_part: str) -> None:
    servicer, channel = agent
    deltas = deltas_through(channel, Store())
    deltas.acknowledged("r", 4)
    servicer.runs = 4
    deltas.record("r", 5, added=[obj])
    assert deltas.push("r") is True
    (sent,) = servicer.seen
    full = build_router_config(dataclasses.replace(snapshot(), edge=alone))
    assert len(getattr(full, config_part)) == 1
    for part in ("static_nats", "port_forwards", "ingress_rules", "egress_rules"):
        assert list(getattr(sent, part)) == list(getattr(full, part)), part


def test_a_complete_chain_goes_as_one_delta_a_gap_or_stale_answer_does_not(
        agent: tuple[Agent, grpc.Channel]) -> None:
    servicer, channel = agent
    store = Store()
    deltas = deltas_through(channel, store)
    f = edge.port_forward_rule(PF)
    deltas.record("r", 4, added=[PF])
    assert deltas.push("r") is None  # base unknown: no full push acknowledged yet
    deltas.acknowledged("r", 3)
    assert deltas.push("r") is None
    assert not servicer.seen
    deltas.record("r", 5, removed=[("firewall", "fw1")])
    assert deltas.push("r") is True
    (sent,) = servicer.seen
    assert (sent.base_generation, sent.generation) == (3, 5)
    assert list(sent.port_forwards) == [f]
    assert [r.id for r in sent.removed] == ["pf1", "fw1"]
    assert store.applied == [5]
    # The agent runs something else (restarted with an older config): stale,
    # the base is forgotten, so the next push is a full one.
    servicer.runs = 2
    store.desired = 6
    deltas.record("r", 6, removed=[("portforward", "pf1")])
    assert deltas.push("r") is None
    assert deltas.push("r") is None
    assert len(servicer.seen) == 2
    # A change already carried by a full push is not recorded again.
    deltas.acknowledged("r", 6)
    deltas.record("r", 6, added=[PF])
    assert deltas.push("r") is None
    assert len(servicer.seen) == 2


def test_a_change_recorded_just_after_the_push_read_the_router_still_goes_as_delta(
        agent: tuple[Agent, grpc.Channel]) -> None:
    import threading

    servicer, channel = agent
    store = Store()
    deltas = deltas_through(channel, store)
    deltas.acknowledged("r", 3)
    deltas.record("r", 4, added=[PF])
    # Generation 5 is committed (the store says so) but recorded a moment later.
    timer = threading.Timer(0.004, lambda: deltas.record("r", 5, removed=[("firewall", "x")]))
    timer.start()
    assert deltas.push("r") is True
    timer.join()
    assert (servicer.seen[-1].base_generation, servicer.seen[-1].generation) == (3, 5)


def test_a_guest_ingress_rule_travels_as_a_delta_under_its_own_kind() -> None:
    guest = dataclasses.replace(FW_IN, status=dataclasses.replace(FW_IN.status, id="fw3"),
                                public_ip_id="", public_ip="", protocol="tcp", port=443,
                                port_end=443, icmp_type=-1, cidrs=("2001:db8:beef::/48",))
    rule = edge.edge_rule(guest, "")
    # Exactly what the full config carries for it.
    full = build_router_config(dataclasses.replace(
        snapshot(), edge=me.EdgeSnapshot(firewall_rules=(guest,))))
    assert list(full.guest_ingress_rules) == [rule]
    created = ed.merge("r", 4, 5, [ed.Change((), (rule,))])
    assert list(created.guest_ingress_rules) == [rule]
    # Named in removed too, by a kind an agent without guest rules refuses.
    assert [(r.kind, r.id) for r in created.removed] == [(me.GUEST_INGRESS, "fw3")]
    assert not created.ingress_rules
    deleted = ed.merge("r", 5, 6, [ed.Change(((me.GUEST_INGRESS, "fw3"),), ())])
    assert [(r.kind, r.id) for r in deleted.removed] == [(me.GUEST_INGRESS, "fw3")]
    assert not deleted.guest_ingress_rules


def test_a_redundant_routers_delta_goes_to_both_instances_or_to_neither_as_applied(
        two_agents: list[tuple[Agent, grpc.Channel]]) -> None:
    """The same delta to each instance's agent (its host's channel, the
    lease epoch with it); applied only when both applied it; one stale (or
    unreachable) instance means a full push to both, the base forgotten."""
    agents = {host: a for host, (a, _) in zip(("host-a", "host-b"), two_agents, strict=True)}
    channels = {host: c for host, (_, c) in zip(("host-a", "host-b"), two_agents, strict=True)}
    store = Store()
    deltas = ed.EdgeDeltas(store, lambda router_id, host, backend: channels[host])
    hosts = ("host-a", "host-b")
    deltas.acknowledged("r", 3)
    deltas.record("r", 4, added=[PF])
    deltas.record("r", 5, added=[FW_IN])
    assert deltas.push("r", 7, hosts=hosts) is True
    for host in hosts:
        (sent,) = agents[host].seen
        assert (sent.base_generation, sent.generation) == (3, 5)
        assert [f.id for f in sent.port_forwards] == ["pf1"]
        assert agents[host].epochs == [7]
    assert store.applied == [5]
    # Instance 1's agent restarted with an older config: stale there.
    agents["host-b"].runs = 2
    store.desired = 6
    deltas.record("r", 6, removed=[("portforward", "pf1")])
    assert deltas.push("r", 7, hosts=hosts) is None
    assert store.applied == [5]
    assert deltas.push("r", 7, hosts=hosts) is None  # the base is forgotten: full push
    assert len(agents["host-b"].seen) == 2


def test_a_redundant_vm_routers_delta_reaches_each_instance_by_its_own_channel(
        two_agents: list[tuple[Agent, grpc.Channel]]) -> None:
    """Router VMs: the router's channel is instance 0's VM whatever the host
    (each VM its own agent); the delta goes to each instance through that
    instance's own channel, so instance 1's VM gets it too."""
    agents = {i: a for i, (a, _) in enumerate(two_agents)}
    channels = {i: c for i, (_, c) in enumerate(two_agents)}
    store = Store()
    deltas = ed.EdgeDeltas(store, lambda router_id, host, backend: channels[0],
                           instance_channel=lambda router_id, i, host: channels[i])
    deltas.acknowledged("r", 3)
    deltas.record("r", 4, added=[PF])
    deltas.record("r", 5, added=[NAT])
    assert deltas.push("r", 7, hosts=("c1", "c2")) is True
    for i in (0, 1):
        (sent,) = agents[i].seen
        assert (sent.base_generation, sent.generation) == (3, 5), i
        assert [n.public_ip for n in sent.static_nats] == [NAT.public_ip], i
    assert store.applied == [5]


def test_a_ports_metadata_travels_as_a_delta_equal_to_its_full_config_entry(
        agent: tuple[Agent, grpc.Channel]) -> None:
    servicer, channel = agent
    p1 = dataclasses.replace(port(1, "10.1.1.5"), user_data=b"#cloud-config\n",
                             labels=(("role", "web"),), ssh_key_pair_id="k1")
    p2 = dataclasses.replace(port(2, "10.1.1.6"), user_data=b"#!/bin/sh\n")
    full = build_router_config(dataclasses.replace(
        snapshot(p1, p2), edge=me.EdgeSnapshot(static_nats=(NAT,)), ssh_keys={"p1": KEY}))
    store = Store()
    deltas = deltas_through(channel, store)
    deltas.acknowledged("r", 4)
    servicer.runs = 4
    deltas.record("r", 5, removed=[(me.GUEST_METADATA, "p1")], added=[p1])
    assert deltas.push("r") is True
    deltas.record("r", 6, removed=[(me.GUEST_METADATA, "p2")], added=[p2])
    deltas.record("r", 7, removed=[(me.GUEST_METADATA, "p2")], added=[p2])
    store.desired = 7
    assert deltas.push("r") is True
    first, second = servicer.seen
    assert [(r.kind, r.id) for r in first.removed] == [(me.GUEST_METADATA, "p1")]
    assert list(first.guest_metadata) == [full.guest_metadata[0]]
    assert full.guest_metadata[0].ssh_public_key == KEY[1]
    # Merged: one entry per port, the public IP of its static NAT included.
    assert [(r.kind, r.id) for r in second.removed] == [(me.GUEST_METADATA, "p2")]
    assert list(second.guest_metadata) == [full.guest_metadata[1]]
    assert full.guest_metadata[1].public_ip == NAT.public_ip
    assert len(first.static_nats) + len(first.ingress_rules) + len(first.port_forwards) == 0
