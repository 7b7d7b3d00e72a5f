"""The reconciler's part for redundant routers: push each instance's config
to its host's agent, record what each instance reports, and end a split
brain (``redundancy_arbiter``) from what the resync saw of both agents.

The router's own status (generation applied, services, errors) is the
preferred instance's when it answers, else the other's; each instance's
role, health and last transition are kept beside it
(``netmgr.store.redundancy``).

An instance's agent is its host's agent (namespace routers) or the agent
of its own VM (VM routers: the resolver the reconciler hands in takes the
router, the instance and its host).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc, redundancy_pb2_grpc
from cloudnet.router.v1 import redundancy_pb2 as rpb

from netmgr.model.redundancy import InstanceReport, Redundancy
from netmgr.reconcile.configbuild.redundancy import instance_config
from netmgr.reconcile.redundancy_arbiter import InstanceView, arbitrate

log = logging.getLogger(__name__)

PUSH_TIMEOUT = 60.0
# A demoted instance is released after this long to try the VRRP link again.
DEMOTION_HOLD = 10.0


class RedundancyView(Protocol):
    def get(self, router_id: str) -> Redundancy | None: ...

    def all(self) -> list[Redundancy]: ...

    def record_instance(self, router_id: str, report: InstanceReport) -> None: ...

    def add_events(self, router_id: str, events: Sequence[str]) -> None: ...


def instance_report(instance: int, host: str, status: pb.RouterStatus) -> InstanceReport:
    r = status.redundancy
    sick = [s.name for s in status.services if not s.healthy]
    detail = status.last_error or (f"unhealthy: {', '.join(sick)}" if sick else "")
    return InstanceReport(instance=instance, host=host, role=r.state,
                          healthy=not sick and not status.last_error, since=r.last_transition,
                          priority=r.priority, demoted=r.demoted, reachable=True,
                          detail=detail[:300])


class RedundantRouters:
    def __init__(self, store: RedundancyView,
                 stub_of: Callable[[str, int, str], agent_pb2_grpc.RouterAgentStub],
                 channel_of: Callable[[str, int, str], grpc.Channel]) -> None:
        """``stub_of(router_id, instance, host)`` / ``channel_of(...)``: the
        agent of that instance (LookupError when there is none yet)."""
        self.store = store
        self._stub_of = stub_of
        self._channel_of = channel_of
        self._demoted_at: dict[tuple[str, int], float] = {}
        # What each router's instances were last pushed as (a router made
        # single again: its other instance is removed before the push).
        self._pushed: dict[str, Redundancy] = {}

    def get(self, router_id: str) -> Redundancy | None:
        return self.store.get(router_id)

    def retire(self, router_id: str, epoch: int, confirm: Callable[[], bool]) -> None:
        """A router made single again: its instance 1 goes first, before the
        single router's push. That one (instance 0) then holds every address
        and announces it (gratuitous ARP) with nothing left to announce them
        after it: if instance 1 went later, a master's announcements could
        come last and leave guests and the edge with a MAC about to vanish.
        (Forgotten by a netmgr restart: the resync removes it then.)"""
        red = self._pushed.get(router_id)
        if red is None or not confirm():  # never without the lease
            return
        del self._pushed[router_id]
        try:
            self._stub_of(router_id, 1, red.hosts[1]).DeleteRouter(
                pb.DeleteRouterRequest(router_id=router_id, lease_epoch=epoch),
                timeout=PUSH_TIMEOUT)
        except (LookupError, grpc.RpcError) as e:  # the resync removes it later
            log.warning("router %s: removing instance 1 on %s failed: %s", router_id,
                        red.hosts[1], e)

    def push(self, red: Redundancy, config: pb.RouterConfig, epoch: int = 0,
             prepare: Callable[[int, pb.RouterConfig], bool] | None = None,
             after: Callable[[int, pb.RouterConfig, pb.RouterStatus], None] | None = None,
             advert_ms: int = 0) -> tuple[bool, list[tuple[int, pb.RouterStatus]]]:
        """Both instances' configs to their agents, fenced by the pushing
        replica's lease ``epoch``. Returns whether both applied it, and the
        statuses received (instance, status). ``prepare(instance, config)``:
        False when that instance cannot take it yet (a router VM whose new
        NICs are not plugged); ``after(instance, config, status)``: once it
        answered (a router VM's NICs no longer named are unplugged).
        ``advert_ms``: VRRP's advert interval (0: the agents' default)."""
        ok, statuses = True, []
        self._pushed[red.router_id] = red
        for i in (0, 1):
            host = red.hosts[i]
            cfg = instance_config(config, red, i, advert_ms)
            if prepare is not None and not prepare(i, cfg):
                ok = False
                continue
            try:
                reply = self._stub_of(red.router_id, i, host).ApplyConfig(
                    pb.ApplyConfigRequest(config=cfg, lease_epoch=epoch), timeout=PUSH_TIMEOUT)
            except (LookupError, grpc.RpcError) as e:
                detail = (f"agent on {host} unreachable: {e.code().name}"
                          if isinstance(e, grpc.RpcError) else str(e))
                log.warning("router %s instance %d: %s", red.router_id, i, detail)
                self.store.record_instance(red.router_id, InstanceReport(
                    i, host, priority=red.priority(i), reachable=False, detail=detail[:300]))
                ok = False
                continue
            status = reply.status
            self.store.record_instance(red.router_id, instance_report(i, host, status))
            statuses.append((i, status))
            if after is not None:
                after(i, cfg, status)
            if status.applied_generation < cfg.generation and \
                    status.rejected_generation != cfg.generation:
                ok = False
        return ok, statuses

    def arbitrate(self, seen: dict[str, dict[int, pb.RouterStatus | None]]) -> None:
        """``seen``: per redundant router, what the resync got from each
        instance's agent (None: not reached)."""
        now = time.monotonic()
        for red in self.store.all():
            got = seen.get(red.router_id, {})
            views = []
            for i in (0, 1):
                status = got.get(i)
                r = status.redundancy if status is not None else None
                views.append(InstanceView(
                    i, status is not None, r.state if r else "",
                    r.priority if r else red.priority(i), bool(r and r.demoted),
                    self._demoted_at.get((red.router_id, i), 0.0),
                    bool(r and r.resync_pending)))
            decision = arbitrate(views, now, DEMOTION_HOLD)
            for i, demote in [(i, True) for i in decision.demote] + \
                             [(i, False) for i in decision.release]:
                try:
                    redundancy_pb2_grpc.RouterRedundancyStub(
                        self._channel_of(red.router_id, i, red.hosts[i])).SetDemoted(
                        rpb.SetDemotedRequest(router_id=red.router_id, demoted=demote),
                        timeout=PUSH_TIMEOUT)
                except (LookupError, grpc.RpcError) as e:
                    log.warning("router %s instance %d: demote=%s failed: %s",
                                red.router_id, i, demote, e)
                    continue
                if demote:
                    self._demoted_at[(red.router_id, i)] = now
                else:
                    self._demoted_at.pop((red.router_id, i), None)
            for event in decision.events:
                log.warning("router %s: %s", red.router_id, event)
            self.store.add_events(red.router_id, decision.events)
