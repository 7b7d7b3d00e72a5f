"""One edge rule changed: push just that change to the router (``ApplyEdgeDelta``).

The reconciler stays level-triggered: a full RouterConfig push is always
correct, and is what happens whenever anything here is unsure. This is the
fast path for the common case. The API, after committing a change of a
static NAT, port forward or firewall rule (which bumped the router to
generation G), tells the reconciler what changed at G (its ``edge_changed``
hook, which calls ``record``): the (kind, id) of the objects removed and the
committed model objects added, which ``configbuild.edge`` maps to agent
objects exactly as it does for a full config. When the reconciler is about to push the router, it
first asks ``push``: if the agent acknowledged generation B and every
generation B+1..desired has a recorded change, they are merged into one
delta B -> desired and sent; the agent applies it only if it runs exactly B.

Anything else falls back to the full push: a generation with no recorded
change (a port, a load balancer, a public IP changed), an agent that runs
another generation or restarted (it answers `stale`), a delta the agent
refused (the full push then reports the reason, naming the object), an
older agent without the RPC. No snapshot of the store is read on this path:
one rule costs one small read and one small write, whatever the rule count.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

import grpc
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import edge_pb2 as epb
from cloudnet.router.v1 import edge_pb2_grpc
from cloudnet.router.v1 import metadata_pb2 as mpb
from cloudnet.router.v1 import routing_pb2 as rpb

from common import grpc_errors as errors
from netmgr.model import edge as me
from netmgr.model.core import Port
from netmgr.reconcile.configbuild.edge import AgentRule, EdgeRule, edge_rule
from netmgr.reconcile.configbuild.metadata import guest_metadata
from netmgr.reconcile.store_view import DeltaStore, ObjectRef

log = logging.getLogger(__name__)

DELTA_TIMEOUT = 30.0
# Changes kept per router while its agent does not acknowledge (beyond: full push).
MAX_PENDING = 10000

Ref: TypeAlias = ObjectRef  # (kind, id)


# What a delta carries: an edge rule, or a port's guest metadata replaced.
DeltaObject: TypeAlias = AgentRule | mpb.GuestMetadata


def ref_of(obj: DeltaObject) -> Ref:
    if isinstance(obj, mpb.GuestMetadata):
        return me.GUEST_METADATA, obj.port_id
    if isinstance(obj, apb.StaticNatRule):
        return "staticnat", obj.id
    if isinstance(obj, apb.PortForwardRule):
        return "portforward", obj.id
    if isinstance(obj, rpb.GuestIngressRule):
        return me.GUEST_INGRESS, obj.id
    return "firewall", obj.id


# ------------------------------------------------------------------ deltas


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What one generation changed: the objects removed, then those added."""

    removed: tuple[Ref, ...]
    added: tuple[DeltaObject, ...]


def merge(router_id: str, base: int, generation: int,
          changes: Sequence[Change]) -> epb.EdgeDelta:
    """Consecutive changes as one delta: the last word on each object wins;
    every object touched is removed first (a no-op if unknown), those that
    exist at the end are added."""
    final: dict[Ref, DeltaObject | None] = {}
    for change in changes:
        for ref in change.removed:
            final[ref] = None
        for obj in change.added:
            final[ref_of(obj)] = obj
    delta = epb.EdgeDelta(router_id=router_id, base_generation=base, generation=generation)
    delta.removed.extend(epb.EdgeObjectRef(kind=k, id=i) for k, i in final)
    for rule in final.values():
        if isinstance(rule, apb.StaticNatRule):
            delta.static_nats.append(rule)
        elif isinstance(rule, apb.PortForwardRule):
            delta.port_forwards.append(rule)
        elif isinstance(rule, apb.IngressRule):
            delta.ingress_rules.append(rule)
        elif isinstance(rule, apb.EgressRule):
            delta.egress_rules.append(rule)
        elif isinstance(rule, rpb.GuestIngressRule):
            delta.guest_ingress_rules.append(rule)
        elif isinstance(rule, mpb.GuestMetadata):
            delta.guest_metadata.append(rule)
    return delta


class EdgeDeltas:
    """Recorded changes per router and generation, and the generation each
    router's agent last acknowledged."""

    def __init__(self, store: DeltaStore,
                 channel: Callable[[str, str, str], grpc.Channel],
                 instance_channel: Callable[[str, int, str], grpc.Channel] | None = None
                 ) -> None:
        self._store = store
        self._channel = channel
        # A redundant router's instance (router ID, instance, host): its
        # host's agent, or its own VM's (a router VM's channel is by
        # instance, not by host).
        self._instance_channel = instance_channel
        self._lock = threading.Lock()
        self._pending: dict[str, dict[int, Change]] = {}
        self._base: dict[str, int] = {}

    def record(self, router_id: str, generation: int, removed: Iterable[Ref] = (),
               added: Iterable[EdgeRule | Port] = ()) -> None:
        """What the change at `generation` removed ((kind, id)) and added or
        replaced (model objects, as committed)."""
        change = Change(tuple(removed), tuple(self._agent_rule(obj) for obj in added))
        with self._lock:
            if generation <= self._base.get(router_id, 0):
                return  # a full push already carried it
            pending = self._pending.setdefault(router_id, {})
            if len(pending) >= MAX_PENDING:
                pending.clear()
            pending[generation] = change

    def _agent_rule(self, obj: EdgeRule | Port) -> DeltaObject:
        if isinstance(obj, Port):
            zone, public_ip, key = self._store.guest_metadata_parts(obj.id)
            return guest_metadata(obj, zone, public_ip, key)
        egress = isinstance(obj, me.FirewallRule) and obj.direction == "egress"
        return edge_rule(obj, self._store.network_cidr(obj.network_id) if egress else "")

    def acknowledged(self, router_id: str, applied_generation: int) -> None:
        """The agent runs this generation (after a full push or a delta)."""
        with self._lock:
            self._base[router_id] = applied_generation
            pending = self._pending.get(router_id)
            if pending:
                for g in [g for g in pending if g <= applied_generation]:
                    del pending[g]

    def forget_base(self, router_id: str) -> None:
        """What the router runs is unknown (full pushes until acknowledged)."""
        with self._lock:
            self._base.pop(router_id, None)

    def forget(self, router_id: str) -> None:
        with self._lock:
            self._base.pop(router_id, None)
            self._pending.pop(router_id, None)

    def _take(self, router_id: str, desired: int) -> epb.EdgeDelta | None:
        # The API records a change just after its commit: a push that reads
        # the router between the two would see a gap and push in full (1 s
        # at 12k rules). A gap is given a few ms to fill before that.
        for wait in (0.0, 0.005, 0.01, 0.02):
            time.sleep(wait)
            with self._lock:
                base = self._base.get(router_id)
                pending = self._pending.get(router_id, {})
                if base is None or desired <= base:
                    return None
                chain = [pending.get(g) for g in range(base + 1, desired + 1)]
            if all(c is not None for c in chain):
                return merge(router_id, base, desired, [c for c in chain if c is not None])
        return None

    def push(self, router_id: str, epoch: int = 0,
             confirm: Callable[[], bool] = lambda: True,
             hosts: Sequence[str] = ()) -> bool | None:
        """Bring the router to its desired generation by a delta: True if done,
        None if a full push is needed. ``epoch``: the pushing replica's lease
        epoch; ``confirm``: its lease still holds (checked right before sending);
        ``hosts``: a redundant router's instances' hosts, by instance (the
        same delta to each: both ran the base, acknowledged only when both
        applied it)."""
        with self._lock:
            if not self._pending.get(router_id) or router_id not in self._base:
                return None
        try:
            host, desired, backend = self._store.router_head(router_id)
        except errors.NotFound:
            self.forget(router_id)
            return None
        delta = self._take(router_id, desired)
        if delta is None or not confirm():
            return None
        targets: list[tuple[int | None, str]] = [*enumerate(hosts)] or [(None, host)]
        for instance, target in targets:
            if not self._send(router_id, target, backend, delta, epoch, instance):
                # Each instance that did apply it takes the full push as
                # the same generation again (a no-op change).
                with self._lock:
                    self._base.pop(router_id, None)
                return None
        self._store.record_edge_delta_applied(router_id, delta.generation)
        self.acknowledged(router_id, delta.generation)
        return True

    def _send(self, router_id: str, host: str, backend: str, delta: epb.EdgeDelta,
              epoch: int, instance: int | None = None) -> bool:
        try:
            # A VM router's agent too, through the VM backend's channel.
            channel = self._channel(router_id, host, backend) \
                if instance is None or self._instance_channel is None \
                else self._instance_channel(router_id, instance, host)
            stub = edge_pb2_grpc.RouterEdgeStub(channel)
            reply = stub.ApplyEdgeDelta(epb.ApplyEdgeDeltaRequest(delta=delta, lease_epoch=epoch),
                                        timeout=DELTA_TIMEOUT)
        except (grpc.RpcError, LookupError) as e:
            log.info("router %s: delta not sent to %s (%s): full push", router_id, host, e)
            return False
        if reply.stale or reply.applied_generation != delta.generation:
            # Refused or not applicable: the full push verifies everything
            # and reports the reason on the router and the object.
            log.info("router %s: delta %d -> %d on %s %s: full push", router_id,
                     delta.base_generation, delta.generation, host,
                     "stale" if reply.stale else f"refused: {reply.last_error}")
            return False
        return True

    def counters(self, router_id: str, refs: Sequence[Ref]) -> dict[Ref, tuple[int, int]]:
        """(packets, bytes) per rule, read from the router (every ref answered)."""
        host, _, backend = self._store.router_head(router_id)
        try:
            stub = edge_pb2_grpc.RouterEdgeStub(self._channel(router_id, host, backend))
        except LookupError as e:
            raise errors.FailedPrecondition(f"counters unavailable: {e}") from e
        try:
            reply = stub.GetEdgeCounters(epb.GetEdgeCountersRequest(
                router_id=router_id,
                objects=[epb.EdgeObjectRef(kind=k, id=i) for k, i in refs]),
                timeout=DELTA_TIMEOUT)
        except grpc.RpcError as e:
            raise errors.FailedPrecondition(
                f"router {router_id}: counters unavailable: {e.code().name}") from e
        out = {ref: (0, 0) for ref in refs}
        out.update({(c.kind, c.id): (c.packets, c.bytes) for c in reply.counters
                    if (c.kind, c.id) in out})
        return out
