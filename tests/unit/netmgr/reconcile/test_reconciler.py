"""Reconciler behaviour: push on change, retry until acknowledged, re-push on
agent restart, sweep routers the model no longer has.

The agent here is a recording servicer behind a real gRPC server (port 0);
the store is an in-memory model holding the few calls the reconciler makes.
The real agent and store are exercised in tests/integration/e2e.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

from common import grpc_errors as errors
from netmgr.model.core import (
    Network,
    PlacedRouter,
    Router,
    RouterBackend,
    RouterReport,
    RouterSnapshot,
    ServiceHealth,
    Zone,
)
from netmgr.reconcile.reconciler import STATUS_TIMEOUT, Reconciler

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ZONE = Zone("z", "203.0.113.0/24", "203.0.113.1", "203.0.113.10", "203.0.113.20",
            100, 200, ("198.51.100.53",), "cloud.internal")


class MemoryStore:
    """The reconciler's store (ReconcilerStore) and VPN status store (VpnStatusStore)
    in memory; mypy checks it against both where the fixtures hand it over."""

    def __init__(self) -> None:
        self.routers: dict[str, Router] = {}
        self.networks: dict[str, Network] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.unreachable: dict[str, str] = {}
        self.ever_unreachable: list[str] = []  # every router ever marked, in order
        self.edge_errors: dict[str, dict[tuple[str, str], str]] = {}
        self.delta_applied: dict[str, int] = {}
        self.recorded: list[str] = []  # every report recorded, in order

    def add(self, generation: int = 1) -> str:
        rid, nid = str(uuid.uuid4()), str(uuid.uuid4())
        self.networks[rid] = Network(nid, "t", "n", "10.0.0.0/24", "10.0.0.1", "n.cloud.internal",
                                     (), (), 0, 86400, 100, "203.0.113.10", rid, NOW)
        self.routers[rid] = Router(rid, "t", nid, RouterBackend.NETNS, "local", generation, 0,
                                   "02:00:00:00:00:01", "02:00:00:00:00:02", (), "", True, NOW)
        return rid

    def bump(self, rid: str) -> None:
        r = self.routers[rid]
        self.routers[rid] = dataclasses.replace(r, desired_generation=r.desired_generation + 1)

    # ReconcilerStore

    def list_routers_all(self) -> list[Router]:
        return list(self.routers.values())

    def placed_routers(self) -> list[PlacedRouter]:
        return [PlacedRouter(r.id, r.host, r.backend, r.desired_generation)
                for r in self.routers.values()]

    def routers_behind(self) -> list[str]:
        return [rid for rid, r in self.routers.items()
                if self.status.get(rid, {}).get("applied", 0) < r.desired_generation]

    def router_snapshot(self, router_id: str) -> RouterSnapshot:
        if router_id not in self.routers:
            raise errors.NotFound(f"router {router_id} not found")
        return RouterSnapshot(router=self.routers[router_id],
                              networks=(self.networks[router_id],), ports=(), zone=ZONE)

    def mark_router_unreachable(self, router_id: str, error: str) -> None:
        self.unreachable[router_id] = error
        self.ever_unreachable.append(router_id)

    def router_head(self, router_id: str) -> tuple[str, int, str]:
        r = self.router_snapshot(router_id).router
        return r.host, r.desired_generation, r.backend

    def network_cidr(self, network_id: str) -> str:
        return next((n.cidr for n in self.networks.values() if n.id == network_id), "")

    def record_edge_delta_applied(self, router_id: str, applied_generation: int) -> None:
        self.delta_applied[router_id] = applied_generation

    def guest_metadata_parts(self, port_id: str) -> tuple[str, str, tuple[str, str] | None]:
        return "", "", None

    def record_router_status(self, router_id: str, *, applied_generation: int,
                             services: Sequence[ServiceHealth], last_error: str,
                             port_errors: Mapping[str, str], reachable: bool) -> None:
        self.status[router_id] = {"applied": applied_generation, "error": last_error}
        self.unreachable.pop(router_id, None)

    def record_router_statuses(self, reports: Sequence[RouterReport]) -> None:
        self.recorded.extend(r.router_id for r in reports)
        for r in reports:
            self.record_router_status(r.router_id, applied_generation=r.applied_generation,
                                      services=r.services, last_error=r.last_error,
                                      port_errors=r.port_errors, reachable=r.reachable)

    def mark_routers_unreachable(self, router_ids: Sequence[str], error: str) -> None:
        for r in router_ids:
            self.mark_router_unreachable(r, error)

    def record_edge_status(self, router_id: str, errors: Mapping[tuple[str, str], str],
                           lb_health: Mapping[str, Mapping[str, list[str]]] | None = None
                           ) -> None:
        self.edge_errors[router_id] = dict(errors)

    def record_edge_statuses(
            self, reports: Sequence[tuple[str, Mapping[tuple[str, str], str],
                                          Mapping[str, Mapping[str, list[str]]] | None]]
    ) -> None:
        for router_id, refused, health in reports:
            self.record_edge_status(router_id, refused, health)

    # VpnStatusStore

    def has_connections(self, router_id: str) -> bool:
        return False

    def routers_with_connections(self, router_ids: Collection[str]) -> set[str]:
        return set()

    def record_status(self, router_id: str, errors: Mapping[str, str],
                      sa_status: Mapping[str, dict[str, Any]]) -> None:
        raise AssertionError("no VPN here: nothing to record")


class RecordingAgent(agent_pb2_grpc.RouterAgentServicer):
    def __init__(self) -> None:
        self.target = ""  # the server's address, once it listens
        self.boot_id = "boot-1"
        self.held: dict[str, pb.RouterStatus] = {}
        self.applied: list[tuple[str, int]] = []
        # Every ApplyConfig call, applied, rejected or failed: (router, generation).
        self.attempts: list[tuple[str, int]] = []
        self.deleted: list[str] = []
        # The lease epoch of every ApplyConfig call.
        self.epochs: list[int] = []
        self.fail_next = 0
        self.fence_next = 0
        self.reject = False
        self.on_list: Callable[[], None] = lambda: None  # runs in each ListRouterStatus
        self.lock = threading.Lock()

    def ApplyConfig(self, request: pb.ApplyConfigRequest,
                    context: grpc.ServicerContext) -> pb.ApplyConfigResponse:
        with self.lock:
            self.attempts.append((request.config.router_id, request.config.generation))
            self.epochs.append(request.lease_epoch)
            if self.fence_next:
                self.fence_next -= 1
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "epoch 1 refused: epoch 2")
            if self.fail_next:
                self.fail_next -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
            cfg = request.config
            prev = self.held.get(cfg.router_id, pb.RouterStatus(router_id=cfg.router_id))
            if self.reject:
                st = pb.RouterStatus(router_id=cfg.router_id,
                                     applied_generation=prev.applied_generation,
                                     rejected_generation=cfg.generation, last_error="bad")
            else:
                st = pb.RouterStatus(router_id=cfg.router_id, applied_generation=cfg.generation)
                self.applied.append((cfg.router_id, cfg.generation))
            self.held[cfg.router_id] = st
            return pb.ApplyConfigResponse(status=st)

    def ListRouterStatus(self, request: pb.ListRouterStatusRequest,
                         context: grpc.ServicerContext) -> pb.ListRouterStatusResponse:
        self.on_list()
        with self.lock:
            return pb.ListRouterStatusResponse(routers=list(self.held.values()),
                                               agent_id="a", boot_id=self.boot_id)

    def DeleteRouter(self, request: pb.DeleteRouterRequest,
                     context: grpc.ServicerContext) -> pb.DeleteRouterResponse:
        with self.lock:
            self.held.pop(request.router_id, None)
            self.deleted.append(request.router_id)
            return pb.DeleteRouterResponse()

    def GetRouterStatus(self, request: pb.GetRouterStatusRequest,
                        context: grpc.ServicerContext) -> pb.RouterStatus:
        raise NotImplementedError("not used by the reconciler")

    def restart(self, *, keep: bool = False) -> None:
        """Forget everything, as an agent that lost its state would; or, with
        ``keep``, a new boot that adopted every router it held."""
        with self.lock:
            if not keep:
                self.held.clear()
            self.boot_id = f"boot-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def agent() -> Iterator[RecordingAgent]:
    servicer = RecordingAgent()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_RouterAgentServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.target = f"127.0.0.1:{port}"
    yield servicer
    server.stop(0)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def reconciler_of(store: MemoryStore, target: str) -> Reconciler:
    return Reconciler(store, store, {"local": target}, resync_interval=0.2)


@pytest.fixture
def reconciler(store: MemoryStore, agent: RecordingAgent) -> Iterator[Reconciler]:
    r = reconciler_of(store, agent.target)
    yield r
    r.stop()


def eventually(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_pushes_existing_routers_at_start_and_changes_on_notify(
        store: MemoryStore, agent: RecordingAgent, reconciler: Reconciler) -> None:
    rid = store.add(generation=3)
    reconciler.start()
    eventually(lambda: (rid, 3) in agent.applied)
    store.bump(rid)
    reconciler.notify(rid)
    eventually(lambda: (rid, 4) in agent.applied)
    eventually(lambda: store.status.get(rid, {}).get("applied") == 4)


def test_a_burst_of_changes_to_a_router_is_one_push(
        store: MemoryStore, agent: RecordingAgent) -> None:
    """Ten changes right after a push (a network's ports created one call
    after the other) reach the agent as one config, not ten. Each change
    goes on only once the reconciler has either pushed it or scheduled it
    for later, so a reconciler that pushed every change would push ten."""
    # A spacing no stall of a loaded CI machine between the ten changes outlasts.
    reconciler = Reconciler(store, store, {"local": agent.target}, resync_interval=60,
                            push_spacing=8.0)
    try:
        rid = store.add(generation=1)
        reconciler.start()
        eventually(lambda: store.status.get(rid, {}).get("applied") == 1)
        for generation in range(2, 12):
            store.bump(rid)
            reconciler.notify(rid)
            with reconciler._lock:
                due = reconciler._due.get(rid, 0.0)

            def pushed_or_waiting(g: int = generation, d: float = due) -> bool:
                return (rid, g) in agent.attempts or d > time.monotonic()

            eventually(pushed_or_waiting)
        eventually(lambda: store.status.get(rid, {}).get("applied") == 11, timeout=30)
        with agent.lock:
            assert [a for a in agent.attempts if a[0] == rid] == [(rid, 1), (rid, 11)]
    finally:
        reconciler.stop()


def test_retries_until_acknowledged(
        store: MemoryStore, agent: RecordingAgent, reconciler: Reconciler) -> None:
    agent.fail_next = 3
    rid = store.add()
    reconciler.start()
    eventually(lambda: (rid, 1) in agent.applied)
    # The agent has answered; netmgr records the answer just after.
    eventually(lambda: store.status.get(rid, {}).get("applied") == 1)
    with agent.lock:
        assert agent.attempts[:4] == [(rid, 1)] * 4  # three refused, then applied


def test_repushes_when_the_agent_restarts(
        store: MemoryStore, agent: RecordingAgent, reconciler: Reconciler) -> None:
    rid = store.add()
    reconciler.start()
    eventually(lambda: (rid, 1) in agent.applied)
    pushes = len(agent.applied)
    agent.restart()
    eventually(lambda: len(agent.applied) > pushes and rid in agent.held)


def test_an_agent_restart_that_kept_its_routers_costs_no_push(
        store: MemoryStore, agent: RecordingAgent, reconciler: Reconciler) -> None:
    # The agent adopts its routers at the generation it applied: pushing all of
    # them again would make a restart of a host with 1,000 routers cost 1,000
    # full applies for nothing.
    kept, lost = store.add(), store.add()
    reconciler.start()
    eventually(lambda: {(kept, 1), (lost, 1)} <= set(agent.applied))
    agent.restart(keep=True)
    with agent.lock:
        del agent.held[lost]  # its state did not survive
    eventually(lambda: (lost, 1) in agent.applied[2:])
    assert [a for a in attempts_while_waiting(agent, 1.0) if a[0] == kept] == []
    assert agent.applied.count((kept, 1)) == 1


def test_repushes_a_config_restored_without_its_secrets(
        store: MemoryStore, agent: RecordingAgent, reconciler: Reconciler) -> None:
    # Same boot ID as far as this netmgr knows (it started after the agent
    # restarted, say), same generation: only awaiting_secrets tells.
    rid = store.add()
    reconciler.start()
    eventually(lambda: (rid, 1) in agent.applied)
    with agent.lock:
        agent.held[rid] = pb.RouterStatus(router_id=rid, applied_generation=1,
                                          awaiting_secrets=True)
        pushes = len(agent.applied)
    eventually(lambda: len(agent.applied) > pushes)
    with agent.lock:
        assert agent.applied[-1] == (rid, 1)
        assert not agent.held[rid].awaiting_secrets  # the push handed them back
    # And then no more pushes: the router has what it needs.
    assert attempts_while_waiting(agent, 1.0) == []


def test_sweeps_routers_the_model_no_longer_has(
        store: MemoryStore, agent: RecordingAgent, reconciler: Reconciler) -> None:
    stale = str(uuid.uuid4())
    agent.held[stale] = pb.RouterStatus(router_id=stale, applied_generation=9)
    reconciler.start()
    eventually(lambda: stale in agent.deleted)
    assert stale not in agent.held


def attempts_while_waiting(agent: RecordingAgent, seconds: float) -> list[tuple[str, int]]:
    """The ApplyConfig calls made during the next `seconds`."""
    with agent.lock:
        before = len(agent.attempts)
    time.sleep(seconds)
    with agent.lock:
        return agent.attempts[before:]


def test_rejected_generation_is_recorded_and_not_retried_in_a_loop(
        store: MemoryStore, agent: RecordingAgent, reconciler: Reconciler) -> None:
    agent.reject = True
    rid = store.add()
    reconciler.start()
    eventually(lambda: store.status.get(rid, {}).get("error") == "bad")
    with agent.lock:
        assert agent.held[rid].rejected_generation == 1
    # A resync that read the agent just before the push may push once more;
    # after that, nothing: over several resync intervals (0.2 s) and retry
    # backoffs (0.5 s, 1 s, 2 s) a retried config would be pushed again.
    time.sleep(0.5)
    assert attempts_while_waiting(agent, 2.5) == [], "the rejected config was pushed again"
    assert agent.applied == []
    # The next change is pushed (and rejected), and is not retried either.
    store.bump(rid)
    reconciler.notify(rid)
    eventually(lambda: (rid, 2) in agent.attempts)
    time.sleep(0.5)
    assert attempts_while_waiting(agent, 2.5) == []


def test_unreachable_agent_is_shown_then_recovers(store: MemoryStore) -> None:
    rid = store.add()
    with socket_port() as port:
        target = f"127.0.0.1:{port}"
    r = reconciler_of(store, target)
    r.start()
    try:
        eventually(lambda: rid in store.unreachable)
        assert "unreachable" in store.unreachable[rid]
    finally:
        r.stop()


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return int(self.s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.s.close()


class SomeLeases:
    """The ShardLeases of a replica holding only some routers' shards."""

    def __init__(self, epochs: dict[str, int]) -> None:
        self.epochs = dict(epochs)
        self.alive = True
        self.on_gained: Callable[[set[int]], None] = lambda _: None

    def start(self, on_gained: Callable[[set[int]], None]) -> None:
        self.on_gained = on_gained

    def stop(self) -> None:
        pass

    def epoch(self, router_id: str) -> int | None:
        return self.epochs.get(router_id)

    def confirm(self) -> bool:
        return self.alive

    def held(self) -> dict[int, int]:
        return {}


def test_a_replica_pushes_only_its_shards_with_their_epoch(
        store: MemoryStore, agent: RecordingAgent) -> None:
    mine, theirs = store.add(), store.add()
    forwarded: list[tuple[str, str]] = []
    leases = SomeLeases({mine: 7})
    r = Reconciler(store, store, {"local": agent.target}, resync_interval=0.2, leases=leases,
                   forward=lambda kind, rid: forwarded.append((kind, rid)))
    r.start()
    try:
        eventually(lambda: (mine, 1) in agent.applied)
        store.bump(theirs)
        r.notify(theirs)
        r.restart(theirs)
        time.sleep(0.5)  # a few resyncs: nothing of theirs is pushed
        assert all(rid == mine for rid, _ in agent.attempts)
        assert set(agent.epochs) == {7}
        assert forwarded == [("notify", theirs), ("restart", theirs)]
        # Their shard taken over: resynced and pushed under the new epoch.
        leases.epochs[theirs] = 8
        leases.on_gained({1})
        eventually(lambda: (theirs, 2) in agent.applied)
        assert agent.epochs[-1] == 8
    finally:
        r.stop()


def test_no_push_while_the_lock_session_is_lost(
        store: MemoryStore, agent: RecordingAgent) -> None:
    rid = store.add()
    leases = SomeLeases({rid: 1})
    leases.alive = False
    r = Reconciler(store, store, {"local": agent.target}, resync_interval=0.2, leases=leases)
    r.start()
    try:
        time.sleep(0.6)
        assert agent.attempts == []
        leases.alive = True
        eventually(lambda: (rid, 1) in agent.applied)
    finally:
        r.stop()


def test_a_fenced_push_is_retried_not_marked_unreachable(
        store: MemoryStore, agent: RecordingAgent, reconciler: Reconciler) -> None:
    rid = store.add()
    agent.fence_next = 2
    reconciler.start()
    eventually(lambda: (rid, 1) in agent.applied)
    assert len(agent.attempts) >= 3
    assert rid not in store.ever_unreachable


def test_a_shard_gained_during_a_resync_never_removes_its_routers(
        store: MemoryStore, agent: RecordingAgent) -> None:
    """A resync reads the model, then asks the agents: a shard taken over in
    between must not make its routers look like stale copies on their own
    host (they were deleted there, and made again seconds later)."""
    theirs = store.add()
    agent.held[theirs] = pb.RouterStatus(router_id=theirs, applied_generation=1)
    leases = SomeLeases({})

    def gain() -> None:  # the lease taken while the agents are asked
        leases.epochs[theirs] = 8

    agent.on_list = gain
    r = Reconciler(store, store, {"local": agent.target}, resync_interval=0.2, leases=leases)
    try:
        r.resync()
        assert agent.deleted == []
        assert theirs in agent.held
        # The next resync, with the shard held all along, finds it current.
        r.resync()
        assert agent.deleted == []
    finally:
        r.stop()


@contextlib.contextmanager
def listing_never_answers(store: MemoryStore, agent: RecordingAgent
                          ) -> Iterator[tuple[Reconciler, SomeLeases]]:
    """A started reconciler holding no shard yet, whose agent's listing never
    answers: before STATUS_TIMEOUT no resync pass finds anything."""
    listing = threading.Event()

    def never_answers() -> None:
        listing.wait(20)

    agent.on_list = never_answers
    leases = SomeLeases({})
    r = Reconciler(store, store, {"local": agent.target}, resync_interval=0.2, leases=leases)
    r.start()
    try:
        yield r, leases
    finally:
        listing.set()
        r.stop()


def test_a_change_the_lost_replica_had_not_pushed_is_pushed_at_the_gain(
        store: MemoryStore, agent: RecordingAgent) -> None:
    """A shard taken over: its routers the store shows behind (a change made
    while no replica held it) are pushed at once, without waiting for a
    resync pass, which asks every agent (tens of seconds at 1,000 routers on
    a loaded machine; here its listing never answers)."""
    theirs, current = store.add(), store.add()
    for rid in (theirs, current):
        agent.held[rid] = pb.RouterStatus(router_id=rid, applied_generation=1)
        store.status[rid] = {"applied": 1}
    store.bump(theirs)
    with listing_never_answers(store, agent) as (_, leases):
        leases.epochs[theirs] = leases.epochs[current] = 4
        leases.on_gained({1})
        # Sooner than the listing's deadline (STATUS_TIMEOUT), after which the
        # resync would push every router it did not hear of.
        eventually(lambda: (theirs, 2) in agent.applied, timeout=STATUS_TIMEOUT / 2)
        assert agent.epochs[-1] == 4
        assert [rid for rid, _ in agent.attempts] == [theirs]  # the current one is left alone


def test_a_notice_heard_just_before_the_gain_is_pushed_at_the_gain(
        store: MemoryStore, agent: RecordingAgent) -> None:
    """Another replica's notice of a change to a router whose shard no one
    holds yet is not this replica's to push; if the shard is gained a
    moment later, and the store's read at the gain ran before the change
    committed, that notice is what tells it: kept, and replayed at the gain
    rather than left to a resync pass (which may take long; here the agent's
    listing never answers)."""
    rid = store.add()
    agent.held[rid] = pb.RouterStatus(router_id=rid, applied_generation=1)
    store.bump(rid)
    store.status[rid] = {"applied": 2}  # the read at the gain does not show it behind
    with listing_never_answers(store, agent) as (r, leases):
        r.notify_held(rid)  # heard from the replica that made the change
        time.sleep(0.3)
        assert agent.attempts == []  # not held: not pushed
        leases.epochs[rid] = 5
        leases.on_gained({1})
        eventually(lambda: (rid, 2) in agent.applied, timeout=STATUS_TIMEOUT / 2)
        assert agent.epochs[-1] == 5


def _held_here_placed_elsewhere(store: MemoryStore, agent: RecordingAgent
                                ) -> tuple[str, Reconciler]:
    """A router the model places on "elsewhere" and the local agent holds
    (this replica holds its shard), and a reconciler over both hosts."""
    rid = store.add()
    store.routers[rid] = dataclasses.replace(store.routers[rid], host="elsewhere")
    agent.held[rid] = pb.RouterStatus(router_id=rid, applied_generation=1)
    return rid, Reconciler(store, store, {"local": agent.target, "elsewhere": "127.0.0.1:1"},
                           resync_interval=0.2, leases=SomeLeases({rid: 3}))


def test_a_copy_on_a_host_the_model_does_not_place_it_on_is_removed(
        store: MemoryStore, agent: RecordingAgent) -> None:
    """The sweep still removes a router from a host it moved away from."""
    rid, r = _held_here_placed_elsewhere(store, agent)
    try:
        r.resync()
        assert rid in agent.deleted
    finally:
        r.stop()


def test_a_router_moved_here_during_a_resync_is_not_removed(
        store: MemoryStore, agent: RecordingAgent) -> None:
    """The model placed it elsewhere when the resync read it, then moved it
    here (its host died) and it was pushed here: that copy is the right one."""
    rid, r = _held_here_placed_elsewhere(store, agent)

    def move_here() -> None:
        store.routers[rid] = dataclasses.replace(store.routers[rid], host="local")

    agent.on_list = move_here
    try:
        r.resync()
        assert agent.deleted == []
    finally:
        r.stop()


def test_a_resync_records_only_reports_that_changed(
        store: MemoryStore, agent: RecordingAgent) -> None:
    """Every resync asks every agent: a report that repeats what this replica
    recorded last costs no write; a changed one, one after the router was
    marked unreachable, or after shards were taken over, is recorded."""
    rid = store.add()
    agent.held[rid] = pb.RouterStatus(router_id=rid, applied_generation=1)
    leases = SomeLeases({rid: 1})
    r = Reconciler(store, store, {"local": agent.target}, resync_interval=60, leases=leases)
    try:
        r.resync()
        assert store.recorded == [rid]
        r.resync()
        assert store.recorded == [rid], "the same report again: nothing written"
        agent.held[rid] = pb.RouterStatus(router_id=rid, applied_generation=1,
                                          last_error="dnsmasq: exited")
        r.resync()
        assert store.recorded == [rid, rid]
        assert store.status[rid]["error"] == "dnsmasq: exited"
        r._mark_unreachable([rid], "agent on local unreachable")
        r.resync()
        assert store.recorded == [rid, rid, rid]
        assert rid not in store.unreachable
        r._shards_gained({1})  # another replica may have recorded since
        r.resync()
        assert store.recorded == [rid, rid, rid, rid]
    finally:
        r.stop()


class GatedAgent(RecordingAgent):
    """Holds every ApplyConfig until ``gate`` is set; counts how many wait at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = 0
        self.most_waiting = 0

    def ApplyConfig(self, request: pb.ApplyConfigRequest,
                    context: grpc.ServicerContext) -> pb.ApplyConfigResponse:
        with self.lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
        self.gate.wait(timeout=30)
        with self.lock:
            self.waiting -= 1
        return super().ApplyConfig(request, context)


def test_pushes_to_one_slow_host_never_hold_up_another_host(store: MemoryStore) -> None:
    """Routers are pushed a few at a time per router host, not a few at a
    time in all: while one host's agent takes its time over every apply
    (a host busy making routers), the other host's routers are pushed too;
    no host gets more than its share at once."""
    agents: dict[str, GatedAgent] = {}
    servers: list[grpc.Server] = []
    for host in ("a", "b"):
        servicer = GatedAgent()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        agent_pb2_grpc.add_RouterAgentServicer_to_server(servicer, server)
        servicer.target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        server.start()
        agents[host] = servicer
        servers.append(server)
    on: dict[str, list[str]] = {"a": [], "b": []}
    for host in "aaaaaabbbbbb":
        rid = store.add()
        store.routers[rid] = dataclasses.replace(store.routers[rid], host=host)
        on[host].append(rid)
    r = Reconciler(store, store, {h: a.target for h, a in agents.items()}, resync_interval=60,
                   workers_per_host=3)
    try:
        r.start()
        eventually(lambda: agents["a"].waiting == 3 and agents["b"].waiting == 3)
        time.sleep(0.3)  # more would show up now
        assert (agents["a"].most_waiting, agents["b"].most_waiting) == (3, 3)
        for a in agents.values():
            a.gate.set()
        for host, a in agents.items():
            def all_applied(a: GatedAgent = a, host: str = host) -> bool:
                return {rid for rid, _ in a.applied} == set(on[host])

            eventually(all_applied)
    finally:
        for a in agents.values():
            a.gate.set()
        r.stop()
        for server in servers:
            server.stop(0)


def test_a_clients_change_is_pushed_before_the_moves_queued_ahead_of_it(
        store: MemoryStore) -> None:
    """A host's push slots are busy and routers moved off a dead host wait
    for them: a change a client makes to another router of that host then
    is pushed as soon as a slot frees, before the moves that fell due first."""
    servicer = GatedAgent()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    agent_pb2_grpc.add_RouterAgentServicer_to_server(servicer, server)
    servicer.target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    blocker = store.add()
    r = Reconciler(store, store, {"local": servicer.target}, resync_interval=60,
                   workers_per_host=1)
    try:
        r.start()
        eventually(lambda: servicer.waiting == 1)  # the one slot taken
        moved = [store.add() for _ in range(5)]
        for rid in moved:
            r.notify(rid, urgent=False)  # what the resync does for a dead host's routers
        changed = store.add()
        r.notify(changed)  # a client's change
        servicer.gate.set()
        eventually(lambda: {rid for rid, _ in servicer.applied} >= {blocker, changed, *moved})
        order = [rid for rid, _ in servicer.applied]
        assert order[0] == blocker
        assert order.index(changed) < min(order.index(rid) for rid in moved)
    finally:
        servicer.gate.set()
        r.stop()
        server.stop(0)



def test_a_clients_change_goes_first_also_while_its_router_is_being_placed(
        store: MemoryStore) -> None:
    """A slot frees while the client's router is new to this replica (its
    host not read yet): the moves, placed already, wait for that read
    rather than take the slot first."""
    r = Reconciler(store, store, {"local": "127.0.0.1:1"}, resync_interval=60,
                   workers_per_host=1)
    moved = [store.add() for _ in range(3)]
    for rid in moved:
        r.notify(rid, urgent=False)
        r._host_of[rid] = "local"  # placed (the dispatch loop's read)
    changed = store.add()
    r.notify(changed)
    later = time.monotonic() + 1
    with r._lock:
        ready, unplaced, _ = r._take_ready(later)
    assert (ready, unplaced) == ([], [changed])
    r._host_of[changed] = "local"
    with r._lock:
        ready, unplaced, _ = r._take_ready(later)
    assert (ready, unplaced) == ([changed], [])
