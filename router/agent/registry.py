"""The routers one agent holds: a runtime per router (one network namespace
each), created on first use and restored from disk when the agent starts.

Each router's last good config is persisted under
<state-dir>/routers/<router_id>/config.pb; on start the agent re-applies every
one of them (adopting daemons that kept running), so routers keep serving
while netmgr is down and across agent restarts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from common.fabric.base import Fabric
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.private_files import ensure_private_dir
from router.agent import adoption
from router.agent.fencing import Fences
from router.agent.host_limits import HostLimits, Short
from router.agent.vrrp_listener import VrrpListener
from router.errors import ConfigError, RequestError, RouterNotFound
from router.lib import validate
from router.runtime import STATE_DIR_MODE, RouterRuntime, router_netns_name, stop_processes
from router.services.base import Context, HostFeatures, RouterPaths
from router.services.host import KernelProbe
from router.services.registry import router_services

log = logging.getLogger(__name__)


class RouterRegistry:
    """Holds the routers of this host (or of one appliance); each router's
    runtime serialises its own changes."""

    def __init__(
        self, state_dir: str, netns_prefix: str = "cn", fabric_netns: str = "cn-fabric",
        agent_id: str = "", dnsmasq_user: str = "dnsmasq", fabric: Fabric | None = None,
        *, only_router: str = "", probe_ports: bool = True, host: HostFeatures | None = None,
        limits: HostLimits | None = None, reapply_workers: int = adoption.REAPPLY_WORKERS,
    ) -> None:
        """``only_router``: an appliance serves that router and refuses any
        other. ``probe_ports``: whether the fabric can plug a diagnostics
        probe port into a segment (not inside a router VM). ``limits``: the
        host's limits, sized for the routers held (the agent's main; None
        leaves the host alone). ``reapply_workers``: routers applied
        again at once at start (those that cannot be adopted)."""
        self.state_dir = state_dir
        self.netns_prefix = netns_prefix
        self.fabric = fabric if fabric is not None else LinuxBridgeFabric(fabric_netns)
        self.agent_id = agent_id or socket.gethostname()
        self.boot_id = uuid.uuid4().hex
        self.dnsmasq_user = dnsmasq_user
        self.only_router = only_router
        self.probe_ports = probe_ports
        # One per process: the kernel does not change under the agent.
        self.host: HostFeatures = host if host is not None else KernelProbe()
        self.limits = limits
        self.reapply_workers = reapply_workers
        # ListRouterStatus reports health this old at most (the health pass
        # refreshes it; 0: checked at every call).
        self.health_max_age = 0.0
        self._short: list[Short] = []  # host limits below what the routers held need
        self._routers: dict[str, RouterRuntime] = {}
        self._lock = threading.Lock()
        # The highest netmgr lease epoch each router accepted (router.agent.fencing).
        self.fences = Fences(state_dir)
        self.vrrp_listener = VrrpListener(state_dir, lambda r: self.runtime(r, create=False))

    def _routers_dir(self) -> str:
        return os.path.join(self.state_dir, "routers")

    def runtime(self, router_id: str, create: bool = True) -> RouterRuntime:
        """The router's runtime; a new, empty one if ``create`` (else RouterNotFound)."""
        if self.only_router and router_id and router_id != self.only_router:
            raise RequestError(f"this appliance serves router {self.only_router} only")
        try:
            validate.check_id("router", router_id)
        except ConfigError as e:
            raise RequestError(str(e)) from None
        with self._lock:
            rt = self._routers.get(router_id)
            if rt is None:
                if not create:
                    raise RouterNotFound(f"router {router_id} is not on this agent")
                rt = self._routers[router_id] = RouterRuntime(Context(
                    router_id=router_id,
                    netns=router_netns_name(self.netns_prefix, router_id),
                    state_dir=os.path.join(self._routers_dir(), router_id),
                    fabric=self.fabric,
                    dnsmasq_user=self.dnsmasq_user,
                ), router_services(self.host))
                self._size_limits(len(self._routers))
            return rt

    def _size_limits(self, routers: int) -> None:
        """The host's limits for ``routers`` (only a new capacity step costs anything)."""
        if self.limits is not None:
            self.limits.ensure(routers)
            self._short = self.limits.shortfall(routers)  # two small reads

    def _with_host(self, status: pb.RouterStatus) -> pb.RouterStatus:
        """A router's status, with the host limits its host lacks (a router
        beyond them fails to start a daemon: this says which limit)."""
        short = self._short
        if short:
            status.services.append(pb.ServiceStatus(
                name="host", healthy=False, detail="; ".join(str(s) for s in short)))
        return status

    def runtimes(self) -> list[RouterRuntime]:
        """Every router held, by ID."""
        with self._lock:
            return sorted(self._routers.values(), key=lambda r: r.ctx.router_id)

    def start(self) -> None:
        """Set up the fabric, size the host's limits, and take over every
        persisted router (``adoption``: untouched when it can be, else
        applied again) and check its health; then, in the background, repair
        what died meanwhile."""
        for d in (self.state_dir, self._routers_dir()):
            ensure_private_dir(d, STATE_DIR_MODE)
        self.fabric.setup()
        # Before any router: keepalived notifies (and checks) the agent.
        self.vrrp_listener.start()
        ids = [r for r in sorted(os.listdir(self._routers_dir()))
               if os.path.exists(RouterPaths(os.path.join(self._routers_dir(), r)).config)]
        with self._lock:
            self._size_limits(len(ids))
        version = adoption.render_version()
        trusted = adoption.read_version(self.state_dir) == version
        runtimes = [self.runtime(r) for r in ids]
        report = adoption.adopt_all(runtimes, trusted, self.reapply_workers)
        adoption.write_version(self.state_dir, version)
        if ids:
            checked = time.monotonic()
            sick = adoption.check_all(runtimes)
            log.info("%d persisted routers: %s%s; health checked in %.2f s, %d sick",
                     len(ids), report,
                     "" if trusted else " (new rendering code: every router applied again)",
                     time.monotonic() - checked, len(sick))
            if sick:
                threading.Thread(target=adoption.repair, args=(sick,),
                                 name="adoption-repair", daemon=True).start()

    def apply(self, cfg: pb.RouterConfig, lease_epoch: int = 0) -> pb.RouterStatus:
        """Apply ``cfg`` unless fenced: from an older lease epoch than the
        router has seen, or older than the generation it runs (FencedPush)."""
        with self.fences.held(cfg.router_id):
            rt = self.runtime(cfg.router_id)
            self.fences.admit(cfg.router_id, lease_epoch, cfg.generation, _running(rt))
            return self._with_host(rt.apply(cfg))

    def apply_edge_delta(self, delta: epb.EdgeDelta,
                         lease_epoch: int = 0) -> epb.ApplyEdgeDeltaResponse:
        """An edge delta, fenced like ``apply`` (RouterNotFound if the router is not held)."""
        with self.fences.held(delta.router_id):
            rt = self.runtime(delta.router_id, create=False)
            self.fences.admit(delta.router_id, lease_epoch, delta.generation, _running(rt))
            return rt.apply_edge_delta(delta)

    def status(self, router_id: str) -> pb.RouterStatus:
        return self._with_host(self.runtime(router_id, create=False).status())

    def list_status(self) -> list[pb.RouterStatus]:
        return [self._with_host(s) for rt in self.runtimes()
                if (s := rt.reported_status(self.health_max_age)) is not None]

    def repair_all(self) -> dict[str, list[str]]:
        """One pass of the health monitor over every router: {router: repaired services}."""
        if self.limits is not None:
            with self._lock:
                self._short = self.limits.shortfall(len(self._routers))
        repaired = {}
        for rt in self.runtimes():
            try:
                names = rt.repair()
            except Exception:  # the monitor must outlive a bad router
                log.exception("router %s: repair failed", rt.ctx.router_id)
                continue
            if names:
                repaired[rt.ctx.router_id] = names
        return repaired

    def run_health_monitor(self, interval: float, stop: threading.Event) -> threading.Thread:
        """Every `interval` seconds, repair what has broken since the last apply."""

        def loop() -> None:
            while not stop.wait(interval):
                self.repair_all()

        t = threading.Thread(target=loop, name="health-monitor", daemon=True)
        t.start()
        return t

    def delete(self, router_id: str, keep_leases: bool, lease_epoch: int = 0) -> None:
        """Remove the router (a restart keeps its leases and its fence);
        FencedPush from an older lease epoch than the router has seen."""
        with self.fences.held(router_id):
            rt = self.runtime(router_id)  # also for routers only left on disk
            self.fences.admit(router_id, lease_epoch, None, _running(rt))
            rt.delete(keep_leases)
            if not keep_leases:
                self.fences.forget(router_id)
        with self._lock:
            if self._routers.get(router_id) is rt:
                del self._routers[router_id]
            if self._short and self.limits is not None:
                self._short = self.limits.shortfall(len(self._routers))


def _running(rt: RouterRuntime) -> int:
    """The generation the router runs (0: none)."""
    cfg = rt.config
    return cfg.generation if cfg is not None else 0


def stop_routers(state_dir: str, netns_prefix: str) -> dict[str, list[int]]:
    """Stop every process of every router an agent with this state dir and
    namespace prefix holds, after the agent itself stopped (the routers keep
    running without it, by design): by each router's records and namespace
    (``runtime.stop_processes``). Returns {router: pids stopped}."""
    top = os.path.join(state_dir, "routers")
    stopped = {}
    for router_id in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        pids = stop_processes(RouterPaths(os.path.join(top, router_id)),
                              router_netns_name(netns_prefix, router_id))
        if pids:
            stopped[router_id] = pids
            log.info("router %s: stopped %s", router_id, ", ".join(map(str, pids)))
    return stopped
