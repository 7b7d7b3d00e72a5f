"""Drive every router towards the state the model wants.

Level-triggered: for a router that needs it, build its whole RouterConfig
from the store (a pure function of a consistent snapshot) and push it to the
agent that hosts it; record what the agent reports. A router needs a push
when the API changed it (``notify``), when its agent holds an older
generation, when its agent restarted (a new boot ID) or awaits the secrets
its config.pb does not hold (VPN keys). A periodic resync
finds the last two and sweeps routers an agent holds that the model no longer
has. Failed pushes are retried with backoff until acknowledged.

With several replicas (``netmgr.store.leases``), a replica pushes only the
routers of the shards it holds a lease on, each push carrying that lease's
epoch (the agent refuses an older one), and confirms its lock session is
alive right before each push. A change another replica's API made is heard
by ``forward``'s notices or, at the latest, by the resync, which compares
each agent's generations with the store. A shard gained is resynced at once,
and its routers the store shows behind (or heard of just before the gain)
are pushed without waiting for that pass.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

from common import grpc_errors as errors
from common.channels import make_channel
from common.tls import ROLE_AGENT, TlsFiles
from netmgr.model.core import Port, RouterBackend
from netmgr.model.redundancy import InstanceReport, Redundancy
from netmgr.reconcile.agent_report import record_report, record_reports
from netmgr.reconcile.configbuild.edge import EdgeRule
from netmgr.reconcile.configbuild.redundancy import VM_ADVERT_MS
from netmgr.reconcile.configbuild.router import build_router_config
from netmgr.reconcile.delta_push import EdgeDeltas
from netmgr.reconcile.redundant_push import RedundancyView, RedundantRouters, instance_report
from netmgr.reconcile.store_view import (
    ObjectRef,
    ReconcilerStore,
    RouterHostsView,
    ShardLeases,
    Unfenced,
    VpnStatusStore,
)
from netmgr.reconcile.vm_backend.nic_plan import NicPlugger

log = logging.getLogger(__name__)

PUSH_TIMEOUT = 60.0
STATUS_TIMEOUT = 5.0
MAX_BACKOFF = 10.0
# A change to a router pushed less than this long ago waits until then: the
# changes of a burst (a network and its ports created one call after the
# other) coalesce into one config build, one push and one apply at the agent
# instead of one each. A change to a quiet router is pushed at once.
PUSH_SPACING = 0.25
# A push done this long after it was due is logged (waits for a worker, slow agents).
SLOW_PUSH = 1.0
# A resync pass this long is logged with where its time went.
SLOW_RESYNC = 5.0
# Notices of changes to routers of shards no one here holds are kept this
# long: a shard gained a moment later replays them (see _shards_gained).
UNHELD_NOTICE_KEPT = 30.0
# Pushes at once to one router host. A push waits for the agent's apply (a new
# router: its namespace, interfaces and daemons started, 0.5-3 s on a busy
# host), so a pool shared by every host let one busy host's queue hold up the
# others' routers; a host's own applies beyond a few only queue in its agent.
WORKERS_PER_HOST = 4
# Threads for pushes in all (hosts x WORKERS_PER_HOST, bounded).
MAX_PUSH_THREADS = 64
# A resync records a router's report only when it differs from the last one
# this replica recorded, or that one is older than this (a safety net).
REPORT_REFRESH = 30.0


class FilterChanges(Protocol):
    def changed(self) -> None:
        """Some port's security changed: push the hosts' filters."""


class VmRouters(Protocol):
    """The VM backend (``vm_backend.tender.RouterVmBackend``) as the reconciler
    uses it: each VM router is its own agent target."""

    @property
    def nics(self) -> NicPlugger: ...

    def stub(self, router_id: str, instance: int = 0) -> agent_pb2_grpc.RouterAgentStub | None:
        """The agent of the router's VM (of a redundant router's instance)
        once it answers (None before)."""
        ...

    def channel(self, router_id: str, instance: int = 0) -> grpc.Channel | None:
        """An authenticated channel to that agent once it answers (None before)."""
        ...

    def tends(self, router_id: str) -> bool:
        """The router is a VM router of this backend's."""
        ...

    def console(self, router_id: str, offset: int) -> tuple[bytes, int, str]: ...


class Reconciler:
    """Implements ``netmgr.api.core.RouterHooks``: the API tells it of every
    committed change."""

    def __init__(
        self,
        store: ReconcilerStore,
        vpn: VpnStatusStore,
        agents: Mapping[str, str],
        *,
        resync_interval: float = 2.0,
        workers_per_host: int = WORKERS_PER_HOST,
        leases: ShardLeases | None = None,
        forward: Callable[[str, str], None] | None = None,
        hosts: RouterHostsView | None = None,
        host_grace: float = 15.0,
        agent_tls: TlsFiles | None = None,
        redundancy: RedundancyView | None = None,
        push_spacing: float = PUSH_SPACING,
    ) -> None:
        """``leases``: the routers this replica pushes (default: every one,
        unfenced). ``forward(kind, router_id)``: tells the other replicas of a
        change to a router this one does not push (kind "notify" or "restart").
        ``hosts``: router hosts that registered (agents beside ``agents``);
        one silent past ``host_grace`` seconds is DOWN and its routers move.
        ``agent_tls``: netmgr's certificate for the agents on TCP (mutual
        TLS); None: plaintext (``--insecure``; unix sockets always are)."""
        self._agent_tls = agent_tls
        self._store = store
        self._leases: ShardLeases = leases if leases is not None else Unfenced()
        self._forward = forward
        self._hosts = hosts
        self._host_grace = dt.timedelta(seconds=host_grace)
        self._registered: dict[str, str] = {}
        self._vpn = vpn
        self._targets = dict(agents)
        self._resync_interval = resync_interval
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, agent_pb2_grpc.RouterAgentStub] = {}
        self._boot_ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # router id -> earliest time of the next attempt
        self._due: dict[str, float] = {}
        # Routers due for a change a client made (or one a lost replica had
        # not pushed): served before the resync's work (routers moved off a
        # dead host, the ones it finds behind), whatever the order they fell
        # due in, so a client's change does not wait behind a host's moves.
        self._urgent: set[str] = set()
        self._backoff: dict[str, float] = {}
        # router id -> when the push now running was due (for the slow-push log)
        self._was_due: dict[str, float] = {}
        # router id -> (the report this replica last recorded, serialised; when)
        self._recorded: dict[str, tuple[bytes, float]] = {}
        # Routers being pushed, each with the host its push goes to (at most
        # ``workers_per_host`` per host), and the host of every router known.
        self._in_flight: dict[str, str] = {}
        self._host_of: dict[str, str] = {}
        self._per_host = workers_per_host
        # When each router's last push recorded its status: a resync must not
        # overwrite that with a status it fetched earlier.
        self._pushed_at: dict[str, float] = {}
        # When each router's last push attempt ended (the spacing's start).
        self._push_ended: dict[str, float] = {}
        self._push_spacing = push_spacing
        self._restarts: set[str] = set()
        # router id -> when a notice of a change to it came while its shard
        # was not held here (replayed if the shard is gained soon after).
        self._unheld_notices: dict[str, float] = {}
        self._resync_now = False
        self._stopping = False
        self._pool = ThreadPoolExecutor(max_workers=MAX_PUSH_THREADS, thread_name_prefix="push")
        self._threads: list[threading.Thread] = []
        # One edge rule changed: sent as a delta when possible (netmgr.reconcile.delta_push).
        self.edge = EdgeDeltas(store, self.router_channel, self._instance_channel)
        # The VM backend, when this netmgr runs one (set by the composition root).
        self.vm_routers: VmRouters | None = None
        # The compute hosts' port filters, when this netmgr pushes them.
        self.port_filters: FilterChanges | None = None
        # Redundant routers: two instances, two hosts (netmgr.reconcile.redundant_push).
        self.redundant = (RedundantRouters(
            redundancy, lambda router_id, i, host: agent_pb2_grpc.RouterAgentStub(
                self._instance_channel(router_id, i, host)), self._instance_channel)
            if redundancy is not None else None)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._leases.start(self._shards_gained)
        for target, fn in (("dispatch", self._dispatch_loop), ("resync", self._resync_loop)):
            t = threading.Thread(target=fn, name=f"reconciler-{target}", daemon=True)
            t.start()
            self._threads.append(t)
        for router in self._store.placed_routers():
            if self._leases.epoch(router.id) is not None:
                self.notify(router.id)

    def _shards_gained(self, shards: set[int]) -> None:
        """Leases taken over: compare their routers' agents with the store now."""
        log.info("%d shards gained: resyncing", len(shards))
        with self._lock:
            # Another replica recorded their reports until now.
            self._recorded.clear()
            self._resync_now = True
            self._wake.notify_all()
        # What the store shows behind is pushed now, not when a resync pass
        # reaches it: a pass asks every agent (tens of seconds at 1,000
        # routers on a loaded host), and one may be under way. Not on the
        # leases' thread: a slow read must not delay their renewal.
        threading.Thread(target=self._push_behind, name="reconciler-gained",
                         daemon=True).start()

    def _push_behind(self) -> None:
        """Push the held routers whose recorded applied generation is older
        than their desired one (the changes a lost replica had not pushed),
        and those whose change was heard shortly before their shard was held
        (the read may have run before that change committed)."""
        now = time.monotonic()
        with self._lock:
            heard = [r for r, t in self._unheld_notices.items() if now - t < UNHELD_NOTICE_KEPT]
        try:
            behind = list(self._store.routers_behind())
        except Exception:  # the store unreachable: the resync finds them later
            log.exception("cannot read the routers behind their desired generation")
            behind = []
        held = [r for r in dict.fromkeys(behind + heard) if self._leases.epoch(r) is not None]
        if held:
            log.info("%d routers of the shards held are behind: pushing", len(held))
        for router_id in held:
            self.notify_later(router_id, urgent=True)  # changes clients made

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._leases.stop()
        for ch in self._channels.values():
            ch.close()

    # ---------------------------------------------------------------- hooks

    def notify(self, router_id: str, urgent: bool = True) -> None:
        """The model of this router changed: push it now (or tell the replica
        that does). ``urgent``: a client's change, pushed before the resync's
        work; not for the resync's own (a router moved off a dead host)."""
        if self.port_filters is not None:  # a port may have changed its host's filters
            self.port_filters.changed()
        if self._leases.epoch(router_id) is None:
            if self._forward is not None:
                self._forward("notify" if urgent else "move", router_id)
            return
        self.notify_held(router_id, urgent)

    def notify_held(self, router_id: str, urgent: bool = True) -> None:
        """Push it now if this replica holds its shard (another replica's notice)."""
        if self._leases.epoch(router_id) is None:
            now = time.monotonic()
            with self._lock:
                self._unheld_notices[router_id] = now
                if len(self._unheld_notices) > 1000:
                    self._unheld_notices = {r: t for r, t in self._unheld_notices.items()
                                            if now - t < UNHELD_NOTICE_KEPT}
            return
        with self._lock:
            # Spaced from its last push (a burst's changes coalesce); never
            # later than a time already due.
            at = max(time.monotonic(),
                     self._push_ended.get(router_id, 0.0) + self._push_spacing)
            self._due[router_id] = min(self._due.get(router_id, at), at)
            if urgent:
                self._urgent.add(router_id)
            self._backoff.pop(router_id, None)
            self._wake.notify_all()

    def edge_changed(self, router_id: str, generation: int, removed: Sequence[ObjectRef],
                     added: Sequence[EdgeRule | Port]) -> None:
        """What an edge change at `generation` removed ((kind, id)) and added
        (model objects as committed), before its notify: sent as a delta when
        possible. Not recorded for another replica's router: it pushes in full."""
        if self._leases.epoch(router_id) is None:
            return
        self.edge.record(router_id, generation, removed, added)

    def restart(self, router_id: str) -> None:
        """Tear the router's runtime down (keeping leases) and rebuild it."""
        if self._leases.epoch(router_id) is None:
            if self._forward is not None:
                self._forward("restart", router_id)
            return
        self.restart_held(router_id)

    def restart_held(self, router_id: str) -> None:
        if self._leases.epoch(router_id) is None:
            return
        with self._lock:
            self._restarts.add(router_id)
        self.notify_held(router_id)

    def rule_counters(self, router_id: str,
                      refs: Sequence[ObjectRef]) -> dict[ObjectRef, tuple[int, int]]:
        """(packets, bytes) per rule, read from the router (every ref answered)."""
        return self.edge.counters(router_id, refs)

    def router_console(self, router_id: str, offset: int) -> tuple[bytes, int, str]:
        """A VM router's serial console from `offset`: (data, next offset, host)."""
        if self.vm_routers is None:
            raise errors.FailedPrecondition(
                f"router {router_id}: this netmgr runs no VM backend: it has no console")
        return self.vm_routers.console(router_id, offset)

    # ------------------------------------------------------------- internals

    def router_channel(self, router_id: str, host: str, backend: str) -> grpc.Channel:
        """The channel to the agent that runs this router: its host's agent
        (namespace routers) or its VM's own agent, with the router's token
        (VM routers). LookupError when there is none (yet)."""
        if backend == RouterBackend.VM:
            channel = self.vm_routers.channel(router_id) if self.vm_routers is not None else None
            if channel is None:
                raise LookupError(f"router {router_id}: its VM's agent is not serving yet")
            return channel
        return self._channel(host)

    def _vm_router(self, router_id: str) -> bool:
        return self.vm_routers is not None and self.vm_routers.tends(router_id)

    def _instance_channel(self, router_id: str, instance: int, host: str) -> grpc.Channel:
        """The agent of one instance of a redundant router: its host's, or its own VM's."""
        if self.vm_routers is not None and self.vm_routers.tends(router_id):
            channel = self.vm_routers.channel(router_id, instance)
            if channel is None:
                raise LookupError(f"router {router_id}: its VM {instance}'s agent is not "
                                  "serving yet")
            return channel
        return self._channel(host)

    def _channel(self, host: str) -> grpc.Channel:
        self._stub(host)
        with self._lock:
            return self._channels[host]

    def _all_targets(self) -> dict[str, str]:
        """Host -> agent address: the configured ones, then the registered router hosts."""
        with self._lock:
            return {**self._registered, **self._targets}

    def _refresh_registered(self) -> None:
        if self._hosts is None:
            return
        registered = self._hosts.router_hosts()
        with self._lock:
            for host, address in registered.items():
                if self._registered.get(host) not in (None, address):
                    # The agent registered from another address: a new channel.
                    self._stubs.pop(host, None)
                    channel = self._channels.pop(host, None)
                    if channel is not None:
                        channel.close()
            self._registered = registered

    def _stub(self, host: str) -> agent_pb2_grpc.RouterAgentStub:
        with self._lock:
            stub = self._stubs.get(host)
            if stub is None:
                target = self._targets.get(host) or self._registered.get(host)
                if target is None:
                    raise LookupError(f"no agent is configured for host {host!r}")
                channel = make_channel(target, tls=self._agent_tls, role=ROLE_AGENT, options=[
                    # gRPC's reconnect backoff grows to two minutes: an agent
                    # back after a long outage would wait that long to be
                    # seen. Bounded like the push retries (MAX_BACKOFF).
                    ("grpc.initial_reconnect_backoff_ms", 250),
                    ("grpc.min_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF * 1000) // 5),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024)])
                self._channels[host] = channel
                stub = self._stubs[host] = agent_pb2_grpc.RouterAgentStub(channel)
            return stub

    def _dispatch_loop(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                ready, unplaced, waiting = self._take_ready(time.monotonic())
                if not ready and not unplaced:
                    self._wake.wait(timeout=min(waiting, 1.0))
                    continue
            for router_id in ready:
                self._pool.submit(self._push_guarded, router_id)
            if unplaced:
                self._place(unplaced)

    def _take_ready(self, now: float) -> tuple[list[str], list[str], float]:
        """Under the lock: the routers due now whose host has a push slot
        free (marked in flight), those whose host is not known yet, and
        how long until the next one is due."""
        ready: list[str] = []
        unplaced: list[str] = []
        waiting = 1.0
        busy = collections.Counter(self._in_flight.values())
        self._urgent &= self._due.keys()
        # An urgent router whose host is not known yet may share a host with
        # the others: they wait for its placement (the next pass) rather
        # than take the slot a client's change is owed.
        placing_urgent = False
        # The urgent ones first; each router once (an unplaced urgent one
        # would otherwise be listed, and its host read, twice).
        for r in dict.fromkeys([*self._urgent, *self._due]):
            t = self._due.get(r)
            if t is None or r in self._in_flight:
                continue
            if t > now:
                waiting = min(waiting, t - now)
                continue
            if self._leases.epoch(r) is None:  # another replica's now
                del self._due[r]
                self._urgent.discard(r)
                self._backoff.pop(r, None)
                continue
            host = self._host_of.get(r)
            if host is None:
                unplaced.append(r)
                placing_urgent |= r in self._urgent
                continue
            if placing_urgent and r not in self._urgent:
                continue
            if busy[host] >= self._per_host:
                continue  # a push of that host ending wakes this loop
            self._was_due[r] = self._due.pop(r)
            self._urgent.discard(r)
            self._in_flight[r] = host
            busy[host] += 1
            ready.append(r)
        return ready, unplaced, waiting

    def _place(self, router_ids: Sequence[str]) -> None:
        """Learn the hosts of routers this replica has not pushed or resynced
        yet (a burst of new routers): one small read each."""
        hosts = {}
        for router_id in router_ids:
            try:
                hosts[router_id] = self._store.router_head(router_id)[0]
            except errors.NotFound:
                hosts[router_id] = ""  # deleted: its push removes it wherever it runs
            except Exception:  # the store unreachable: the resync places it later
                log.exception("router %s: cannot read its host", router_id)
                hosts[router_id] = ""
        with self._lock:
            for router_id, host in hosts.items():
                self._host_of.setdefault(router_id, host)

    def _push_guarded(self, router_id: str) -> None:
        ok = False
        began = time.monotonic()
        try:
            ok = self._push(router_id)
        except Exception:  # a bug must not kill the worker; retry later
            log.exception("router %s: push failed", router_id)
        with self._lock:
            self._in_flight.pop(router_id, None)
            ended = self._push_ended[router_id] = time.monotonic()
            due = self._was_due.pop(router_id, began)
            if ended - due > SLOW_PUSH:  # queued behind other pushes, or a slow agent
                log.info("router %s: push %s %.2f s after it was due (%.2f s waiting for a "
                         "worker, %.2f s pushing)", router_id, "done" if ok else "failed",
                         ended - due, began - due, ended - began)
            if ok:
                self._backoff.pop(router_id, None)
            elif router_id not in self._due:
                delay = min(MAX_BACKOFF, self._backoff.get(router_id, 0.25) * 2)
                self._backoff[router_id] = delay
                self._due[router_id] = time.monotonic() + delay
            self._wake.notify_all()

    def _push(self, router_id: str) -> bool:
        epoch = self._leases.epoch(router_id)
        if epoch is None:
            return True  # another replica's now: it pushes
        with self._lock:
            restart = router_id in self._restarts
        red = self.redundant.get(router_id) if self.redundant is not None else None
        # A redundant router's delta goes to each instance (a router VM's by
        # its own channel).
        if not restart and self.edge.push(router_id, epoch, self._leases.confirm,
                                          red.hosts if red is not None else ()):
            with self._lock:
                self._pushed_at[router_id] = time.monotonic()
            return True
        try:
            snapshot = self._store.router_snapshot(router_id)
        except errors.NotFound:
            # Deleted from the model: remove it wherever it may run.
            return self._delete_everywhere(router_id, epoch)
        router = snapshot.router
        with self._lock:
            self._host_of[router_id] = router.host
        config = build_router_config(snapshot)
        if red is not None and self.redundant is not None:
            return self._push_redundant(router_id, red, config, epoch)
        if self.redundant is not None:
            self.redundant.retire(router_id, epoch, self._leases.confirm)  # made single
        vm_routers = self.vm_routers if router.backend == RouterBackend.VM else None
        if vm_routers is not None:
            vm_stub = vm_routers.stub(router_id)
            if vm_stub is None:
                return False  # its VM is not serving yet; the backend notifies when it is
            stub = vm_stub
            # The agent finds a NIC by MAC when it applies: hot-plug new ones first.
            if not vm_routers.nics.before_push(router_id, config):
                return False
        else:
            try:
                stub = self._stub(router.host)
            except LookupError as e:
                self._mark_unreachable([router_id], str(e))
                return False
        with self._lock:
            restart = router_id in self._restarts
        if not self._leases.confirm():
            return False  # the lease may be passing: never push without it
        try:
            if restart:
                stub.DeleteRouter(
                    pb.DeleteRouterRequest(router_id=router_id, keep_leases=True,
                                           lease_epoch=epoch),
                    timeout=PUSH_TIMEOUT,
                )
                with self._lock:
                    self._restarts.discard(router_id)
            reply = stub.ApplyConfig(pb.ApplyConfigRequest(config=config, lease_epoch=epoch),
                                     timeout=PUSH_TIMEOUT)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # Fenced: a newer lease pushed, or this snapshot is older than
                # what the router runs. Retried (a fresh snapshot) while held.
                log.warning("router %s: push refused: %s", router_id, e.details())
                return False
            msg = f"agent on {router.host} unreachable: {e.code().name}: {e.details()}"
            log.warning("router %s: %s", router_id, msg)
            self._mark_unreachable([router_id], msg)
            return False
        self._record(router_id, reply.status)
        with self._lock:
            self._pushed_at[router_id] = time.monotonic()
        status = reply.status
        if status.rejected_generation == config.generation:
            # Rejected whole: the agent keeps its last good config, and a
            # retry of the same config would be rejected again. The error is
            # shown on the router and its objects; the next change re-pushes.
            log.warning("router %s: generation %d rejected: %s",
                        router_id, config.generation, status.last_error)
            return True
        self.edge.acknowledged(router_id, status.applied_generation)
        if vm_routers is not None:  # NICs the applied config no longer names: unplugged now
            vm_routers.nics.after_push(router_id, config, status)
        return bool(status.applied_generation >= config.generation)

    def _push_redundant(self, router_id: str, red: Redundancy, config: pb.RouterConfig,
                        epoch: int) -> bool:
        assert self.redundant is not None
        if not self._leases.confirm():
            return False  # the lease may be passing: never push without it
        with self._lock:
            self._restarts.discard(router_id)
        vm = self.vm_routers if self._vm_router(router_id) else None
        if vm is None:
            ok, statuses = self.redundant.push(red, config, epoch)
        else:
            # Each VM finds its NICs by MAC: hot-plug new ones first.
            ok, statuses = self.redundant.push(
                red, config, epoch,
                prepare=lambda i, cfg: vm.nics.before_push(router_id, cfg, i),
                after=lambda i, cfg, st: vm.nics.after_push(router_id, cfg, st, i),
                advert_ms=VM_ADVERT_MS)
        if not statuses:
            self._mark_unreachable(
                [router_id], f"agents on {red.hosts[0]} and {red.hosts[1]} unreachable")
            return False
        # The router's status: the preferred instance's when it answered.
        status = dict(statuses).get(red.preferred, statuses[0][1])
        self._record(router_id, status)
        with self._lock:
            self._pushed_at[router_id] = time.monotonic()
        if ok and len(statuses) == 2:  # both run it: the base of the next edge delta
            self.edge.acknowledged(router_id, min(s.applied_generation for _, s in statuses))
        else:
            self.edge.forget_base(router_id)
        return ok

    def record_status(self, router_id: str, status: pb.RouterStatus) -> None:
        """Store what an agent reported (the VM backend's watch uses it too)."""
        self._record(router_id, status)

    def _record(self, router_id: str, status: pb.RouterStatus) -> None:
        record_report(self._store, self._vpn, router_id, status)
        self._remember([(router_id, status)])

    def _remember(self, reports: Sequence[tuple[str, pb.RouterStatus]]) -> None:
        now = time.monotonic()
        with self._lock:
            for router_id, status in reports:
                self._recorded[router_id] = (status.SerializeToString(deterministic=True), now)

    def _mark_unreachable(self, router_ids: Sequence[str], error: str) -> None:
        """Shown on each router; the next report of each is recorded whatever
        it says (it differs from what is stored now)."""
        self._store.mark_routers_unreachable(router_ids, error)
        with self._lock:
            for router_id in router_ids:
                self._recorded.pop(router_id, None)

    def _unrecorded(self, reports: Sequence[tuple[str, pb.RouterStatus]]
                    ) -> list[tuple[str, pb.RouterStatus]]:
        """The reports that differ from what this replica last recorded for
        the router (or recorded long ago): a resync every 2 s of routers that
        changed nothing costs no database work."""
        now = time.monotonic()
        with self._lock:
            last = {r: self._recorded.get(r) for r, _ in reports}
        return [(r, st) for r, st in reports
                if (seen := last[r]) is None or now - seen[1] > REPORT_REFRESH
                or seen[0] != st.SerializeToString(deterministic=True)]

    def _delete_everywhere(self, router_id: str, epoch: int) -> bool:
        ok = True
        for host in self._all_targets():
            if not self._leases.confirm():
                return False
            try:
                self._stub(host).DeleteRouter(
                    pb.DeleteRouterRequest(router_id=router_id, lease_epoch=epoch),
                    timeout=PUSH_TIMEOUT,
                )
            except grpc.RpcError as e:
                log.warning("router %s: delete on %s failed: %s", router_id, host, e.code().name)
                ok = False
        return ok

    def _resync_loop(self) -> None:
        while True:
            with self._lock:
                # Every resync_interval, or at once when shards were gained;
                # not at every notify (the condition is shared with the
                # dispatcher): a resync reads every router and every agent.
                due = time.monotonic() + self._resync_interval
                while not (self._stopping or self._resync_now):
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(timeout=left)
                self._resync_now = False
                if self._stopping:
                    return
            try:
                self.resync()
            except Exception:
                log.exception("resync failed")

    def resync(self) -> None:
        """Compare what each agent holds with the model; push or sweep the difference."""
        began = time.monotonic()
        self._refresh_registered()
        if self._hosts is not None:
            for router_id in self._hosts.expire(self._host_grace):
                self.notify(router_id, urgent=False)  # made again on its new host
        routers = self._store.placed_routers()
        read_s, listing_s, record_s, recorded = time.monotonic() - began, 0.0, 0.0, 0
        with self._lock:
            self._host_of = {r.id: r.host for r in routers}
        # The leases as they are now, for the whole pass: a shard gained while
        # the agents are asked must not make its routers look like copies the
        # model placed elsewhere (they would be deleted on their own host). A
        # gain triggers another resync, which covers them.
        mine = {r.id: epoch for r in routers
                if (epoch := self._leases.epoch(r.id)) is not None}
        by_host: dict[str, dict[str, int]] = {}
        for r in routers:
            if r.backend == "vm":
                continue  # its own agent target, watched by the VM backend
            if r.id not in mine:
                continue  # another replica's
            by_host.setdefault(r.host, {})[r.id] = r.desired_generation
        # A redundant router's instances: (router, host) -> instance.
        instances: dict[tuple[str, str], int] = {}
        reds = [red for red in (self.redundant.store.all() if self.redundant is not None else [])
                if red.router_id in mine]
        desired = {r.id: r.desired_generation for r in routers}
        seen: dict[str, dict[int, pb.RouterStatus | None]] = {r.router_id: {} for r in reds}
        vm_reds = [red for red in reds if self._vm_router(red.router_id)]
        reds = [red for red in reds if not self._vm_router(red.router_id)]
        for red in vm_reds:
            seen[red.router_id] = self._resync_vm_instances(red, desired.get(red.router_id, 0))
        for red in reds:
            for i, host in enumerate(red.hosts):
                instances[(red.router_id, host)] = i
                by_host.setdefault(host, {})[red.router_id] = desired.get(red.router_id, 0)
        for host in self._all_targets():
            wanted = by_host.get(host, {})
            fetched_at = time.monotonic()
            try:
                reply = self._stub(host).ListRouterStatus(
                    pb.ListRouterStatusRequest(), timeout=STATUS_TIMEOUT
                )
                took = time.monotonic() - fetched_at
                listing_s += took
                if took > SLOW_PUSH:
                    log.info("agent on %s: its routers' status took %.2f s", host, took)
            except grpc.RpcError as e:
                msg = f"agent on {host} unreachable: {e.code().name}"
                # A redundant router's instance 1 down: it serves from instance 0.
                self._mark_unreachable(
                    [r for r in wanted if instances.get((r, host)) != 1], msg)
                for router_id in wanted:
                    instance = instances.get((router_id, host))
                    if instance is not None and self.redundant is not None:
                        self.redundant.store.record_instance(router_id, InstanceReport(
                            instance, host, reachable=False, detail=msg))
                    self.notify_later(router_id)
                continue
            if self._boot_ids.get(host) not in (None, reply.boot_id):
                # A new boot adopts what it had applied and reports it: only
                # what it lacks (stale, missing, awaiting secrets) is pushed.
                log.info("agent on %s restarted (boot %s)", host, reply.boot_id[:8])
            self._boot_ids[host] = reply.boot_id
            held = {s.router_id: s for s in reply.routers}
            # The router's own status: instance 0's for a redundant router
            # (instance 1's is its own, below). Recorded together: one
            # transaction for the host's routers.
            changed = self._unrecorded([
                (router_id, held[router_id]) for router_id in wanted
                if router_id in held and instances.get((router_id, host)) != 1
                and not self._pushed_since(router_id, fetched_at)])
            recording = time.monotonic()
            record_reports(self._store, self._vpn, changed)
            self._remember(changed)
            record_s += time.monotonic() - recording
            recorded += len(changed)
            for router_id, generation in wanted.items():
                status = held.get(router_id)
                instance = instances.get((router_id, host))
                if instance is not None and self.redundant is not None:
                    seen[router_id][instance] = status
                    if status is not None:
                        self.redundant.store.record_instance(
                            router_id, instance_report(instance, host, status))
                stale = status is None or status.applied_generation < generation
                rejected = status is not None and status.rejected_generation == generation
                # A config the agent restored from disk lacks its secrets (VPN
                # keys): the full push hands them back, whoever restarted when.
                secrets = status is not None and status.awaiting_secrets
                if secrets or (stale and not rejected):
                    self.notify_later(router_id)
            for router_id in held.keys() - wanted.keys():
                if router_id in desired:
                    epoch = mine.get(router_id)
                    if epoch is None:
                        continue  # another replica's (when this pass began)
                    # A copy where the router is not (any more): it moved while
                    # this host was away, or it is no longer redundant.
                    self._remove_stale(host, router_id, epoch)
                elif self._leases.epoch(router_id) is not None:
                    self.notify_later(router_id)  # the push finds it gone and deletes it
        if self.redundant is not None and seen:
            self.redundant.arbitrate(seen)
        took = time.monotonic() - began
        if took > SLOW_RESYNC:
            log.info("resync took %.2f s: the store's routers %.2f s, the agents' listings "
                     "%.2f s, %d reports recorded in %.2f s (%d routers held)", took, read_s,
                     listing_s, recorded, record_s, len(mine))

    def _resync_vm_instances(self, red: Redundancy, desired: int
                             ) -> dict[int, pb.RouterStatus | None]:
        """A redundant VM router: what each of its two VMs' agents reports
        (None: not reached), recorded per instance; the router's own status
        is the preferred instance's (else the other's)."""
        assert self.vm_routers is not None
        assert self.redundant is not None
        got: dict[int, pb.RouterStatus | None] = {}
        fetched_at = time.monotonic()
        for i, host in enumerate(red.hosts):
            channel = self.vm_routers.channel(red.router_id, i)
            status = None
            if channel is not None:
                try:
                    reply = agent_pb2_grpc.RouterAgentStub(channel).ListRouterStatus(
                        pb.ListRouterStatusRequest(), timeout=STATUS_TIMEOUT)
                    status = next((s for s in reply.routers if s.router_id == red.router_id),
                                  None)
                except grpc.RpcError:
                    pass
            got[i] = status
            if status is None:
                self.redundant.store.record_instance(red.router_id, InstanceReport(
                    i, host, priority=red.priority(i), reachable=False,
                    detail=f"the agent of its VM on {host or '?'} is not serving"))
                continue
            self.redundant.store.record_instance(red.router_id,
                                                 instance_report(i, host, status))
            if (status.applied_generation < desired and status.rejected_generation != desired) \
                    or status.awaiting_secrets:
                self.notify_later(red.router_id)
        mine = got.get(red.preferred) or got.get(1 - red.preferred)
        if mine is not None and not self._pushed_since(red.router_id, fetched_at):
            self._record(red.router_id, mine)
        return got

    def _remove_stale(self, host: str, router_id: str, epoch: int) -> None:
        try:
            placed, _, backend = self._store.router_head(router_id)
        except errors.NotFound:
            placed, backend = "", ""
        if placed == host and backend != RouterBackend.VM and not (
                self.redundant is not None and self.redundant.get(router_id) is not None):
            return  # moved here while this resync ran: the copy is the right one
        if not self._leases.confirm():
            return
        try:
            self._stub(host).DeleteRouter(
                pb.DeleteRouterRequest(router_id=router_id, lease_epoch=epoch),
                timeout=PUSH_TIMEOUT)
            log.info("router %s: stale copy on %s removed", router_id, host)
        except grpc.RpcError as e:
            log.warning("router %s: removing its stale copy on %s failed: %s", router_id, host,
                        e.code().name)

    def _pushed_since(self, router_id: str, t: float) -> bool:
        """A push is running or has recorded a status after time `t`."""
        with self._lock:
            return router_id in self._in_flight or self._pushed_at.get(router_id, 0.0) > t

    def notify_later(self, router_id: str, urgent: bool = False) -> None:
        """Schedule a push unless one is already due or running (keeps backoff)."""
        with self._lock:
            if urgent:
                self._urgent.add(router_id)
            if router_id not in self._due and router_id not in self._in_flight:
                self._due[router_id] = time.monotonic()
                self._wake.notify_all()
