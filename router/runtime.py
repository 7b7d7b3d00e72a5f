"""One router's runtime: verify, render, check and apply its config, keep the last good one.

    apply(cfg):  verify every service  -> reject whole on ConfigError
                 render every service  -> diff against what each last applied
                 check the changed ones (nft -c, dnsmasq --test) -> reject whole
                 apply the changed ones, in order (``router.services.registry``)
                 persist cfg as config.pb (the last good config)

A service whose rendered files equal what it last applied is not touched at
all, so pushing the same config twice rewrites no file, signals no daemon and
reloads no ruleset.

The runtime holds everything of one router: its config and status, what each
service last applied, and the router's service objects (with the state they
keep, such as the nftables table loaded and its edge index). Everything else
reaches that state through the public methods below.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Sequence, Set

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from common import netlink
from common.fabric.base import FabricError
from common.netns import NETNS_RUN_DIR, ensure_netns, remove_netns
from router.errors import ApplyError, ConfigError, StaleDelta
from router.lib import files, proc
from router.services.base import Context, EdgeRules, ObjectId, Rendered, Service

log = logging.getLogger(__name__)

# What can go wrong while applying a valid config; anything else is a bug.
APPLY_ERRORS = (ApplyError, netlink.NetlinkOpError, FabricError, proc.CommandError, OSError)


# In a router's state dir while a change is under way (``RouterRuntime.adopt``).
APPLYING = "applying"


def router_netns_name(prefix: str, router_id: str) -> str:
    """Name of the network namespace that holds router `router_id` on a host."""
    return f"{prefix}r-{router_id[:12]}"


def verify(cfg: pb.RouterConfig, services: Iterable[Service]) -> None:
    """Every service's verify(); raises the first ConfigError."""
    for service in services:
        service.verify(cfg)


def load_config(path: str) -> pb.RouterConfig:
    with open(path, "rb") as f:
        return pb.RouterConfig.FromString(f.read())


class RouterRuntime:
    """The running state of one router. Its methods serialise on ``lock``
    (also held by services' background work, through ``base.RunningConfig``)."""

    def __init__(self, ctx: Context, services: Sequence[Service]) -> None:
        """``services``: this router's own service objects, in apply order
        (``router.services.registry.router_services``); removed in reverse."""
        self.ctx = ctx
        self.lock = threading.Lock()
        self.services = tuple(services)
        self.config: pb.RouterConfig | None = None  # the last good config
        self.rejected_generation = 0
        self.last_error = ""
        self.apply_seconds = 0.0
        # How often each service's apply() ran: the proof that a no-op is one.
        self.service_applies: dict[str, int] = {s.name: 0 for s in self.services}
        self._applied: dict[str, Rendered] = {}  # service -> rendered files it runs
        # Adopted at an agent start, not yet rendered (``take_over``).
        self._adopted = False
        # Every service's health as last checked, and when: a bulk status
        # (``reported_status``) reports it while it is young enough.
        self._health: tuple[float, dict[str, pb.ServiceStatus]] | None = None
        self._error_object: pb.ObjectStatus | None = None
        # The service that changes edge rules in place (nftables), by name.
        self._edge: tuple[str, EdgeRules] | None = None
        for s in self.services:
            if s.capabilities.edge_rules is not None:
                self._edge = (s.name, s.capabilities.edge_rules)

    # ---------------------------------------------------------------- apply

    def apply(self, cfg: pb.RouterConfig) -> pb.RouterStatus:
        with self.lock:
            self._apply(cfg)
            return self._status()

    def restore(self) -> pb.RouterStatus | None:
        """Apply the persisted config again, with the edge changes made in
        place after it (an agent start); None when nothing is persisted."""
        cfg = self._persisted()
        return None if cfg is None else self.apply(cfg)

    def _persisted(self) -> pb.RouterConfig | None:
        path = self.ctx.paths.config
        if not os.path.exists(path):
            return None
        cfg = load_config(path)
        if self._edge is not None:
            cfg = self._edge[1].restore(self.ctx.paths, cfg)
        return cfg

    # ------------------------------------------------------------- adoption

    def adopt(self) -> bool:
        """At an agent start: take the router over as the previous agent left
        it, touching nothing (no daemon signalled, no table reloaded, no
        fork), when its namespace is still there (not a host reboot) and no
        change was cut short (the ``applying`` mark). False: it cannot be,
        apply the persisted config again (``restore``). The caller knows the
        rendering code is the one that applied it (``router.agent.adoption``).

        What each service last applied is rendered later (``take_over``),
        off the start's critical path.
        """
        if not os.path.exists(os.path.join(NETNS_RUN_DIR, self.ctx.netns)) or \
                os.path.exists(self.ctx.paths.path(APPLYING)):
            return False
        cfg = self._persisted()
        if cfg is None:
            return False
        with self.lock:
            self.config = cfg
            self._adopted = True
        return True

    def take_over(self) -> None:
        """Render an adopted config as what each service runs (and let the
        services take over the state they keep, such as the table loaded):
        until then a push would find every service changed."""
        with self.lock:
            self._take_over()

    def _take_over(self) -> None:
        if not self._adopted or self.config is None:
            return
        self._adopted = False
        cfg = self.config
        for s in self.services:
            rendered = s.render(cfg, self.ctx.paths)
            if s.capabilities.adopts is not None:
                s.capabilities.adopts.adopt(self.ctx, cfg, rendered)
            self._applied[s.name] = rendered
        if self._edge is not None:
            self._edge[1].full_applied(self.ctx, self)

    def _applying(self, started: bool) -> None:
        """Mark (or clear) a change in progress: an agent killed meanwhile
        leaves the mark, and its successor applies again rather than adopt."""
        path = self.ctx.paths.path(APPLYING)
        try:
            if started:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            else:
                files.remove(path)
        except FileNotFoundError:
            pass  # no state dir: nothing applied yet, nothing to adopt
        except OSError as e:  # the change itself must not fail for its mark
            log.warning("router %s: %s: %s", self.ctx.router_id, path, e)

    def _apply(self, cfg: pb.RouterConfig) -> None:
        started = time.monotonic()
        self._take_over()
        self._health = None
        try:
            verify(cfg, self.services)
        except ConfigError as e:
            self._reject(cfg.generation, e)
            return
        os.makedirs(self.ctx.state_dir, mode=0o755, exist_ok=True)
        ensure_netns(self.ctx.netns)
        rendered = {s.name: s.render(cfg, self.ctx.paths) for s in self.services}
        changed = [s for s in self.services if self._applied.get(s.name) != rendered[s.name]]
        # Seconds per changed service (check + apply): in the log, because
        # under TCG (router VMs) one slow daemon check dominates an apply.
        took = {s.name: 0.0 for s in changed}
        rendered_at = time.monotonic()
        try:
            for service in changed:
                t0 = time.monotonic()
                service.check(self.ctx, rendered[service.name])
                took[service.name] += time.monotonic() - t0
        except ConfigError as e:
            self._reject(cfg.generation, e)
            return
        if changed:
            self._applying(True)
        for service in changed:
            t0 = time.monotonic()
            try:
                service.apply(self.ctx, cfg, rendered[service.name], self.config)
            except APPLY_ERRORS as e:
                # Not a rejection: the config is valid and a retry may work.
                # The service's state is unknown now, so the next apply redoes it.
                self._applied.pop(service.name, None)
                self.last_error = f"generation {cfg.generation}: {service.name}: {e}"
                log.error("router %s: %s", cfg.router_id, self.last_error)
                return
            finally:
                self.service_applies[service.name] += 1
                took[service.name] += time.monotonic() - t0
            self._applied[service.name] = rendered[service.name]
        if self.config != cfg:
            files.write_if_changed_bytes(self.ctx.paths.config, cfg.SerializeToString(),
                                         mode=0o600)
        if changed:
            self._applying(False)
        self.config = cfg
        self._clear_errors()
        if self._edge is not None:
            self._edge[1].full_applied(self.ctx, self)
        self.apply_seconds = time.monotonic() - started
        if changed:
            log.info("router %s: generation %d applied (%s) in %.3f s (render %.3f s)",
                     cfg.router_id, cfg.generation,
                     ", ".join(f"{n} {t:.3f} s" for n, t in took.items()),
                     self.apply_seconds, rendered_at - started)

    def repair(self) -> list[str]:
        """Re-apply, from the last good config, every service whose health
        check fails (a dnsmasq that died, a table someone deleted).

        Pushing the same config again would not do it: an unchanged config
        is a no-op by design. Returns the names of the services repaired.
        """
        with self.lock:
            if self.config is None:
                return []
            cfg = self.config
            sick = [name for name, h in self._check_health(cfg).items() if not h.healthy]
            if not sick:
                # e.g. active VPN connections without an IKE SA (the peer
                # refused or was away): initiate again.
                for s in self.services:
                    if s.capabilities.tends is not None:
                        s.capabilities.tends.tend(self.ctx, cfg)
                return []
            log.warning("router %s: repairing %s", self.ctx.router_id, ", ".join(sick))
            self._take_over()
            for name in sick:
                self._applied.pop(name, None)
            self._apply(cfg)
            return sick

    def _reject(self, generation: int, e: ConfigError) -> None:
        self.rejected_generation = generation
        self.last_error = f"generation {generation} rejected: {e}"
        self._error_object = (
            pb.ObjectStatus(kind=e.kind, id=e.object_id, ok=False, error=str(e))
            if e.kind and e.object_id else None
        )
        log.warning("router %s: %s", self.ctx.router_id, self.last_error)

    def _clear_errors(self) -> None:
        self.rejected_generation, self.last_error, self._error_object = 0, "", None

    # --------------------------------------------------------------- status

    def status(self) -> pb.RouterStatus:
        with self.lock:
            return self._status()

    def reported_status(self, max_age: float = 0.0) -> pb.RouterStatus | None:
        """The status of a router that holds a config or an error (None: an
        empty runtime, e.g. left by a failed request). ``max_age``: report
        the services' health checked at most that many seconds ago (by the
        agent's health pass) rather than check it now (0: now)."""
        with self.lock:
            if self.config is None and not self.last_error:
                return None
            return self._status(max_age)

    def status_and_config(self) -> tuple[pb.RouterStatus, pb.RouterConfig | None]:
        """The status and the config it reports on, taken together."""
        with self.lock:
            return self._status(), self.config

    def check_health(self) -> list[str]:
        """Check every service now (kept for ``reported_status``); the sick ones."""
        with self.lock:
            if self.config is None:
                return []
            return [n for n, h in self._check_health(self.config).items() if not h.healthy]

    def _check_health(self, cfg: pb.RouterConfig) -> dict[str, pb.ServiceStatus]:
        health = {s.name: s.health(self.ctx, cfg) for s in self.services}
        self._health = (time.monotonic(), health)
        return health

    def _status(self, max_age: float = 0.0) -> pb.RouterStatus:
        cfg = self.config or pb.RouterConfig(router_id=self.ctx.router_id)
        objects = [
            pb.ObjectStatus(kind="network", id=n.network_id, ok=True) for n in cfg.guest_networks
        ] + [
            pb.ObjectStatus(kind="port", id=h.port_id, ok=True)
            for n in cfg.guest_networks for h in n.hosts
        ]
        if self._error_object is not None:
            bad = self._error_object
            objects = [o for o in objects if (o.kind, o.id) != (bad.kind, bad.id)] + [bad]
        status = pb.RouterStatus(
            router_id=self.ctx.router_id,
            applied_generation=cfg.generation,
            rejected_generation=self.rejected_generation,
            last_error=self.last_error,
            objects=objects,
            apply_seconds=self.apply_seconds,
        )
        if self.config is None:
            return status
        checked = self._health
        if max_age and (checked is None or time.monotonic() - checked[0] > max_age):
            checked = (0.0, self._check_health(cfg))
        for s in self.services:
            conditional = s.capabilities.conditional
            if conditional is None or conditional.serves(cfg):
                status.services.append(checked[1][s.name] if max_age and checked
                                       else s.health(self.ctx, cfg))
        for s in self.services:
            extras = s.capabilities.status_extras
            if extras is not None:
                extras.add_status(self.ctx, cfg, status)
        return status

    # ----------------------------------------------------------- edge rules

    def apply_edge_delta(self, delta: epb.EdgeDelta) -> epb.ApplyEdgeDeltaResponse:
        """Apply an edge delta in place, or answer ``stale`` (push the whole config)."""
        if self._edge is None:
            return self._delta_reply(stale=True)
        name, edge = self._edge
        self.take_over()  # an adopted router's index is built from its rendering
        edge.wait_ready()
        with self.lock:
            started = time.monotonic()
            self._applying(True)
            try:
                added = edge.apply_delta(self.ctx, self.config, delta)
            except StaleDelta as e:
                if e.table_changed:
                    # Unknown until the next full apply, which clears the mark.
                    self._applied.pop(name, None)
                else:
                    self._applying(False)
                log.info("router %s: delta to %d not applied in place: %s", self.ctx.router_id,
                         delta.generation, e)
                return self._delta_reply(stale=True)
            except ConfigError as e:
                self._applying(False)
                self._reject(delta.generation, e)
                bad = [pb.ObjectStatus(kind=e.kind, id=e.object_id, ok=False, error=str(e))] \
                    if e.kind and e.object_id else []
                return self._delta_reply(objects=bad)
            # The table no longer matches what the service last rendered: the
            # next full apply diffs elements against what is loaded.
            self._applied.pop(name, None)
            self._clear_errors()
            self.apply_seconds = time.monotonic() - started
            try:
                edge.journal(self.ctx, self, delta)
                self._applying(False)
            except OSError:
                # Applied but not persisted: a restarted agent reports the older
                # generation of config.pb, and netmgr pushes again (the mark
                # makes it apply that again rather than adopt the table).
                log.exception("router %s: journaling delta %d failed", self.ctx.router_id,
                              delta.generation)
            return self._delta_reply(objects=[pb.ObjectStatus(kind=k, id=i, ok=True)
                                              for k, i in added])

    def _delta_reply(self, stale: bool = False,
                     objects: Iterable[pb.ObjectStatus] = ()) -> epb.ApplyEdgeDeltaResponse:
        return epb.ApplyEdgeDeltaResponse(
            stale=stale, applied_generation=self.config.generation if self.config else 0,
            rejected_generation=self.rejected_generation, last_error=self.last_error,
            objects=list(objects), apply_seconds=self.apply_seconds)

    def edge_counters(self, wanted: Set[ObjectId]) -> list[epb.EdgeCounter]:
        """Packets and bytes per edge object (every object's if ``wanted`` is empty)."""
        if self._edge is None:
            return []
        return self._edge[1].counters(self.ctx, self, wanted)

    # --------------------------------------------------------------- delete

    def delete(self, keep_leases: bool) -> None:
        """Stop the daemons, unplug the interfaces, remove the namespace and files."""
        with self.lock:
            for service in reversed(self.services):
                service.remove(self.ctx, self.config, keep_leases)
            remove_netns(self.ctx.netns)
            self._remove_files(keep_leases)
            self.config, self._applied, self._health = None, {}, None
            self._clear_errors()

    def _remove_files(self, keep_leases: bool) -> None:
        top = self.ctx.state_dir
        if not os.path.isdir(top):
            return
        if keep_leases and os.path.exists(self.ctx.paths.dhcp_leases):
            keep = os.path.relpath(self.ctx.paths.dnsmasq(), top)
            for name in os.listdir(top):
                if name != keep:
                    path = os.path.join(top, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    else:
                        files.remove(path)
            return
        shutil.rmtree(top)
