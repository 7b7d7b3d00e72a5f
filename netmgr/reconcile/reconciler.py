"""Drive every router towards the state the model wants.

Level-triggered: for a router that needs it, build its whole RouterConfig
from the store (a pure function of a consistent snapshot) and push it to the
agent that hosts it; record what the agent reports. A router needs a push
when the API changed it (``notify``), when its agent holds an older
generation, when its agent restarted (a new boot ID) or awaits the secrets
its config.pb does not hold (VPN keys). A periodic resync
finds the last two and sweeps routers an agent holds that the model no longer
has. Failed pushes are retried with backoff until acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

from common import grpc_errors as errors
from netmgr.model.core import RouterBackend
from netmgr.model.redundancy import InstanceReport, Redundancy
from netmgr.reconcile.agent_report import record_report
from netmgr.reconcile.configbuild.edge import EdgeRule
from netmgr.reconcile.configbuild.router import build_router_config
from netmgr.reconcile.delta_push import EdgeDeltas
from netmgr.reconcile.redundant_push import RedundancyView, RedundantRouters, instance_report
from netmgr.reconcile.store_view import ObjectRef, ReconcilerStore, VpnStatusStore
from netmgr.reconcile.vm_backend.nic_plan import NicPlugger

log = logging.getLogger(__name__)

PUSH_TIMEOUT = 60.0
STATUS_TIMEOUT = 5.0
MAX_BACKOFF = 10.0


class VmRouters(Protocol):
    """The VM backend (``vm_backend.tender.RouterVmBackend``) as the reconciler
    uses it: each VM router is its own agent target."""

    @property
    def nics(self) -> NicPlugger: ...

    def stub(self, router_id: str) -> agent_pb2_grpc.RouterAgentStub | None:
        """The agent of the router's VM once it answers (None before)."""
        ...

    def channel(self, router_id: str) -> grpc.Channel | None:
        """An authenticated channel to that agent once it answers (None before)."""
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
        workers: int = 4,
        redundancy: RedundancyView | None = None,
    ) -> None:
        self._store = store
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
        self._backoff: dict[str, float] = {}
        self._in_flight: set[str] = set()
        # When each router's last push recorded its status: a resync must not
        # overwrite that with a status it fetched earlier.
        self._pushed_at: dict[str, float] = {}
        self._restarts: set[str] = set()
        self._stopping = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push")
        self._threads: list[threading.Thread] = []
        # One edge rule changed: sent as a delta when possible (netmgr.reconcile.delta_push).
        self.edge = EdgeDeltas(store, self.router_channel)
        # The VM backend, when this netmgr runs one (set by the composition root).
        self.vm_routers: VmRouters | None = None
        # Redundant routers: two instances, two hosts (netmgr.reconcile.redundant_push).
        self.redundant = (RedundantRouters(redundancy, self._stub, self._channel)
                          if redundancy is not None else None)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for target, fn in (("dispatch", self._dispatch_loop), ("resync", self._resync_loop)):
            t = threading.Thread(target=fn, name=f"reconciler-{target}", daemon=True)
            t.start()
            self._threads.append(t)
        for router in self._store.list_routers_all():
            self.notify(router.id)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for ch in self._channels.values():
            ch.close()

    # ---------------------------------------------------------------- hooks

    def notify(self, router_id: str) -> None:
        """The model of this router changed: push it now."""
        with self._lock:
            self._due[router_id] = 0.0
            self._backoff.pop(router_id, None)
            self._wake.notify_all()

    def edge_changed(self, router_id: str, generation: int, removed: Sequence[ObjectRef],
                     added: Sequence[EdgeRule]) -> None:
        """What an edge change at `generation` removed ((kind, id)) and added
        (model objects as committed), before its notify: sent as a delta when
        possible."""
        self.edge.record(router_id, generation, removed, added)

    def restart(self, router_id: str) -> None:
        """Tear the router's runtime down (keeping leases) and rebuild it."""
        with self._lock:
            self._restarts.add(router_id)
        self.notify(router_id)

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

    def _channel(self, host: str) -> grpc.Channel:
        self._stub(host)
        with self._lock:
            return self._channels[host]

    def _stub(self, host: str) -> agent_pb2_grpc.RouterAgentStub:
        with self._lock:
            stub = self._stubs.get(host)
            if stub is None:
                target = self._targets.get(host)
                if target is None:
                    raise LookupError(f"no agent is configured for host {host!r}")
                channel = grpc.insecure_channel(target, options=[
                    ("grpc.max_send_message_length", 64 * 1024 * 1024)])
                self._channels[host] = channel
                stub = self._stubs[host] = agent_pb2_grpc.RouterAgentStub(channel)
            return stub

    def _dispatch_loop(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                ready = [r for r, t in self._due.items() if t <= now and r not in self._in_flight]
                for r in ready:
                    del self._due[r]
                    self._in_flight.add(r)
                if not ready:
                    future = [t for r, t in self._due.items() if r not in self._in_flight]
                    timeout = max(0.0, min(future) - now) if future else 1.0
                    self._wake.wait(timeout=min(timeout, 1.0))
                    continue
            for router_id in ready:
                self._pool.submit(self._push_guarded, router_id)

    def _push_guarded(self, router_id: str) -> None:
        ok = False
        try:
            ok = self._push(router_id)
        except Exception:  # a bug must not kill the worker; retry later
            log.exception("router %s: push failed", router_id)
        with self._lock:
            self._in_flight.discard(router_id)
            if ok:
                self._backoff.pop(router_id, None)
            elif router_id not in self._due:
                delay = min(MAX_BACKOFF, self._backoff.get(router_id, 0.25) * 2)
                self._backoff[router_id] = delay
                self._due[router_id] = time.monotonic() + delay
            self._wake.notify_all()

    def _push(self, router_id: str) -> bool:
        with self._lock:
            restart = router_id in self._restarts
        red = self.redundant.get(router_id) if self.redundant is not None else None
        if not restart and red is None and self.edge.push(router_id):
            with self._lock:
                self._pushed_at[router_id] = time.monotonic()
            return True
        try:
            snapshot = self._store.router_snapshot(router_id)
        except errors.NotFound:
            # Deleted from the model: remove it wherever it may run.
            return self._delete_everywhere(router_id)
        router = snapshot.router
        config = build_router_config(snapshot)
        if red is not None and self.redundant is not None:
            return self._push_redundant(router_id, red, config)
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
                self._store.mark_router_unreachable(router_id, str(e))
                return False
        with self._lock:
            restart = router_id in self._restarts
        try:
            if restart:
                stub.DeleteRouter(
                    pb.DeleteRouterRequest(router_id=router_id, keep_leases=True),
                    timeout=PUSH_TIMEOUT,
                )
                with self._lock:
                    self._restarts.discard(router_id)
            reply = stub.ApplyConfig(pb.ApplyConfigRequest(config=config), timeout=PUSH_TIMEOUT)
        except grpc.RpcError as e:
            msg = f"agent on {router.host} unreachable: {e.code().name}: {e.details()}"
            log.warning("router %s: %s", router_id, msg)
            self._store.mark_router_unreachable(router_id, msg)
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

    def _push_redundant(self, router_id: str, red: Redundancy, config: pb.RouterConfig) -> bool:
        assert self.redundant is not None
        with self._lock:
            self._restarts.discard(router_id)
        ok, statuses = self.redundant.push(red, config)
        if not statuses:
            self._store.mark_router_unreachable(
                router_id, f"agents on {red.hosts[0]} and {red.hosts[1]} unreachable")
            return False
        # The router's status: the preferred instance's when it answered.
        status = dict(statuses).get(red.preferred, statuses[0][1])
        self._record(router_id, status)
        with self._lock:
            self._pushed_at[router_id] = time.monotonic()
        return ok

    def record_status(self, router_id: str, status: pb.RouterStatus) -> None:
        """Store what an agent reported (the VM backend's watch uses it too)."""
        self._record(router_id, status)

    def _record(self, router_id: str, status: pb.RouterStatus) -> None:
        record_report(self._store, self._vpn, router_id, status)

    def _delete_everywhere(self, router_id: str) -> bool:
        ok = True
        for host in self._targets:
            try:
                self._stub(host).DeleteRouter(
                    pb.DeleteRouterRequest(router_id=router_id), timeout=PUSH_TIMEOUT
                )
            except grpc.RpcError as e:
                log.warning("router %s: delete on %s failed: %s", router_id, host, e.code().name)
                ok = False
        return ok

    def _resync_loop(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._wake.wait(timeout=self._resync_interval)
                if self._stopping:
                    return
            try:
                self.resync()
            except Exception:
                log.exception("resync failed")

    def resync(self) -> None:
        """Compare what each agent holds with the model; push or sweep the difference."""
        routers = self._store.list_routers_all()
        by_host: dict[str, dict[str, int]] = {}
        for r in routers:
            if r.backend == "vm":
                continue  # its own agent target, watched by the VM backend
            by_host.setdefault(r.host, {})[r.id] = r.desired_generation
        # A redundant router's instances: (router, host) -> instance.
        instances: dict[tuple[str, str], int] = {}
        reds = self.redundant.store.all() if self.redundant is not None else []
        desired = {r.id: r.desired_generation for r in routers}
        for red in reds:
            for i, host in enumerate(red.hosts):
                instances[(red.router_id, host)] = i
                by_host.setdefault(host, {})[red.router_id] = desired.get(red.router_id, 0)
        seen: dict[str, dict[int, pb.RouterStatus | None]] = {r.router_id: {} for r in reds}
        for host in self._targets:
            wanted = by_host.get(host, {})
            fetched_at = time.monotonic()
            try:
                reply = self._stub(host).ListRouterStatus(
                    pb.ListRouterStatusRequest(), timeout=STATUS_TIMEOUT
                )
            except grpc.RpcError as e:
                msg = f"agent on {host} unreachable: {e.code().name}"
                for router_id in wanted:
                    instance = instances.get((router_id, host))
                    if instance is not None and self.redundant is not None:
                        self.redundant.store.record_instance(router_id, InstanceReport(
                            instance, host, reachable=False, detail=msg))
                        if instance == 1:
                            continue  # the router serves from its other instance
                    self._store.mark_router_unreachable(router_id, msg)
                    self.notify_later(router_id)
                continue
            restarted = self._boot_ids.get(host) not in (None, reply.boot_id)
            self._boot_ids[host] = reply.boot_id
            held = {s.router_id: s for s in reply.routers}
            for router_id, generation in wanted.items():
                status = held.get(router_id)
                instance = instances.get((router_id, host))
                if instance is not None and self.redundant is not None:
                    seen[router_id][instance] = status
                    if status is not None:
                        self.redundant.store.record_instance(
                            router_id, instance_report(instance, host, status))
                    # Instance 1's status is its own; the router's is instance 0's.
                    status_of_router = None if instance == 1 else status
                else:
                    status_of_router = status
                if status_of_router is not None and \
                        not self._pushed_since(router_id, fetched_at):
                    self._record(router_id, status_of_router)
                stale = status is None or status.applied_generation < generation
                rejected = status is not None and status.rejected_generation == generation
                # A config the agent restored from disk lacks its secrets (VPN
                # keys): the full push hands them back, whoever restarted when.
                secrets = status is not None and status.awaiting_secrets
                if restarted or secrets or (stale and not rejected):
                    self.notify_later(router_id)
            for router_id in held.keys() - wanted.keys():
                if router_id in desired:
                    # A router no longer redundant: its other instance goes.
                    self._delete_on(host, router_id)
                else:
                    self.notify_later(router_id)  # the push finds it gone and deletes it
        if self.redundant is not None and reds:
            self.redundant.arbitrate(seen)

    def _delete_on(self, host: str, router_id: str) -> None:
        try:
            self._stub(host).DeleteRouter(pb.DeleteRouterRequest(router_id=router_id),
                                          timeout=PUSH_TIMEOUT)
        except grpc.RpcError as e:
            log.warning("router %s: delete on %s failed: %s", router_id, host, e.code().name)

    def _pushed_since(self, router_id: str, t: float) -> bool:
        """A push is running or has recorded a status after time `t`."""
        with self._lock:
            return router_id in self._in_flight or self._pushed_at.get(router_id, 0.0) > t

    def notify_later(self, router_id: str) -> None:
        """Schedule a push unless one is already due or running (keeps backoff)."""
        with self._lock:
            if router_id not in self._due and router_id not in self._in_flight:
                self._due[router_id] = time.monotonic()
                self._wake.notify_all()
